// natter's web client: the protocol of PROTOCOL.md over a WebSocket at /ws on the page's
// own origin. Plain JavaScript, no framework, no build step. One object per WebSocket
// message each way.
//
// Layout: md5 (the protocol sends passwords as MD5 digests), the connection (reconnects
// with backoff, logs in again, re-sends unanswered messages with their client_id), the
// state, the handlers of server events, and the rendering.
'use strict';

// ---- MD5 (RFC 1321), for the password digests the protocol carries ----
function md5(text) {
  const bytes = new TextEncoder().encode(text);
  const n = ((bytes.length + 8) >>> 6) + 1;
  const words = new Uint32Array(n * 16);
  for (let i = 0; i < bytes.length; i++) words[i >> 2] |= bytes[i] << ((i % 4) * 8);
  words[bytes.length >> 2] |= 0x80 << ((bytes.length % 4) * 8);
  words[n * 16 - 2] = bytes.length * 8;
  const S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
  const K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0);
  let [a0, b0, c0, d0] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  for (let blk = 0; blk < n * 16; blk += 16) {
    let [a, b, c, d] = [a0, b0, c0, d0];
    for (let i = 0; i < 64; i++) {
      let f, g;
      if (i < 16) { f = (b & c) | (~b & d); g = i; }
      else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
      else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
      else { f = c ^ (b | ~d); g = (7 * i) % 16; }
      const s = S[(i >> 4) * 4 + (i % 4)];
      const x = (a + f + K[i] + words[blk + g]) >>> 0;
      [a, d, c] = [d, c, b];
      b = (b + ((x << s) | (x >>> (32 - s)))) >>> 0;
    }
    a0 = (a0 + a) >>> 0; b0 = (b0 + b) >>> 0; c0 = (c0 + c) >>> 0; d0 = (d0 + d) >>> 0;
  }
  return [a0, b0, c0, d0].map(v => [0, 8, 16, 24].map(s => ((v >>> s) & 255).toString(16).padStart(2, '0')).join('')).join('');
}

// ---- state ----
const state = {
  me: null,            // {email, username} once logged in
  login: null,         // the login request, kept to log in again after a reconnect
  friends: new Map(),  // email -> {username, online, unread}
  groups: new Map(),   // id -> {name, owner, members, unread}
  convs: new Map(),    // key ('@email', '#group', '*') -> {items: Map id -> item, oldest, more}
  current: '*',
  pending: [],         // sends waiting for their `sent`: {req, key, item}
  typing: new Map(),   // conv key -> Map(email -> timer)
  readBy: new Map(),   // email -> how far it read what we sent
  ringing: null,
  asked: [],           // requests waiting for an answer: {type, then}
  resetting: false,    // a password reset's code was asked for
};
const $ = id => document.getElementById(id);

// ---- the connection ----
let ws = null;
let backoff = 500;

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  ws = new WebSocket(`${scheme}//${location.host}/ws`);
  setStatus('connecting…');
  ws.onopen = () => {
    backoff = 500;
    setStatus('connected', 'ok');
    state.asked = [];
    if (state.login) send(state.login); else showAuth();
  };
  ws.onmessage = e => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    handle(msg);
  };
  ws.onclose = () => {
    setStatus(`offline; retrying in ${Math.round(backoff / 1000)} s`, 'bad');
    const wait = backoff;
    backoff = Math.min(backoff * 2, 15000);
    setTimeout(connect, wait + Math.random() * 250);
  };
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

// A request whose answer we wait for; `then(msg)` runs on its success or failure.
function ask(obj, type, then) {
  state.asked.push({ type, then });
  send(obj);
}

function setStatus(text, cls) {
  const s = $('status');
  s.textContent = text;
  s.className = 'status ' + (cls || '');
}

function note(text) {
  $('note').textContent = text;
  clearTimeout(note.t);
  note.t = setTimeout(() => { $('note').textContent = ''; }, 6000);
}

// ---- server events ----
function handle(m) {
  const d = m.details || {};
  const kind = `${m.event}/${m.type}`;
  if (m.event === 'success' || m.event === 'failed' || m.event === 'invalid') {
    const i = state.asked.findIndex(a => a.type === m.type);
    if (i >= 0 && m.type !== 'message') {
      const a = state.asked.splice(i, 1)[0];
      a.then(m);
      return;
    }
  }
  switch (kind) {
    case 'success/login': return loggedIn(d);
    case 'failed/login':
      state.login = null;
      showAuth();
      return authMsg(m.message);
    case 'sent/otp': return otpSent(m);
    case 'success/verify': authMsg('Registered. Log in now.'); $('otp-form').hidden = true; return;
    case 'sent/message': return sentOk(m.id);
    case 'failed/message': return sentFailed(m.message);
    case 'personal/message': return incoming(d, '@' + (d.from || '').toLowerCase());
    case 'group/message': return incoming(d, '#' + d.group);
    case 'global/message': return incoming(d, '*');
    case 'success/group': case 'update/group': return groupChanged(d);
    case 'presence/presence': return presence(d.email, d.online);
    case 'typing/typing': return typing(d);
    case 'read/read': return readMark(d);
    case 'request/voice': return ringing(d.email);
    case 'end/voice': case 'reject/voice': case 'time/voice': case 'offline/voice': case 'busy/voice':
      state.ringing = null; return renderCall(`Call ${m.event === 'end' ? 'ended' : m.event}`);
    case 'accept/voice': return renderCall('Call connected: the audio needs a native client (the UDP relay is out of a browser\'s reach).');
    case 'logout/logout': return loggedOut(`Logged out by the server: ${d.reason || ''}`);
    case 'success/logout': return loggedOut('Logged out.');
    default:
      if (m.event === 'failed' || m.event === 'invalid') note(`${m.type}: ${m.message}`);
  }
}

function loggedIn(d) {
  state.me = { email: d.email, username: d.username };
  $('me').textContent = `${d.username} <${d.email}>`;
  $('logout').hidden = false;
  $('auth').hidden = true;
  $('chat').hidden = false;
  for (const f of d.friends || []) {
    const e = f.email.toLowerCase();
    const old = state.friends.get(e);
    state.friends.set(e, { username: f.username, email: f.email, online: old ? old.online : false, unread: 0 });
  }
  ask({ type: 'groups' }, 'groups', r => {
    for (const g of r.details || []) state.groups.set(g.group, { ...g, unread: 0 });
    render();
  });
  refreshUnread();
  // Messages sent while offline go again with their client_id: none is lost or doubled.
  for (const p of state.pending) send(p.req);
  if (state.current !== '*') loadHistory(state.current, true);
  render();
}

function loggedOut(text) {
  state.me = null; state.login = null;
  state.friends.clear(); state.groups.clear(); state.convs.clear(); state.pending = [];
  state.current = '*';
  $('logout').hidden = true;
  $('me').textContent = '';
  showAuth();
  authMsg(text);
}

function showAuth() {
  $('auth').hidden = false;
  $('chat').hidden = true;
}

function authMsg(text) { $('auth-msg').textContent = text || ''; }

function otpSent(m) {
  authMsg(m.message + '. Type the code from the mail.');
  if (state.resetting) {
    for (const el of document.querySelectorAll('#reset-form .after-code')) el.hidden = false;
    $('reset-form').querySelector('button').textContent = 'Set the new password';
  } else {
    $('otp-form').hidden = false;
  }
}

function conv(key) {
  if (!state.convs.has(key)) state.convs.set(key, { items: new Map(), oldest: null, more: true, loaded: false });
  return state.convs.get(key);
}

function incoming(d, key) {
  const c = conv(key);
  if (d.id && c.items.has(d.id)) return;
  c.items.set(d.id || `g${Date.now()}${Math.random()}`, d);
  if (d.id && key !== '*') send({ type: 'ack', details: { id: d.id } });
  stopTyping(key, d.from);
  if (key.startsWith('@') && !state.friends.has(key.slice(1))) {
    state.friends.set(key.slice(1), { email: d.from, username: d.from, online: true, unread: 0 });
  }
  if (key === state.current && document.visibilityState === 'visible') {
    markRead(key);
  } else if (key !== '*') {
    const who = key.startsWith('@') ? state.friends.get(key.slice(1)) : state.groups.get(key.slice(1));
    if (who) who.unread = (who.unread || 0) + 1;
  }
  render();
}

function sentOk(id) {
  const p = state.pending.shift();
  if (!p) return;
  const c = conv(p.key);
  c.items.delete(p.item.tmp);
  p.item.id = id;
  delete p.item.tmp;
  c.items.set(id, p.item);
  render();
}

function sentFailed(text) {
  const p = state.pending.shift();
  if (p) {
    conv(p.key).items.delete(p.item.tmp);
    render();
  }
  note(`Not sent: ${text}`);
}

function groupChanged(g) {
  if (!g.members.some(e => e.toLowerCase() === state.me?.email.toLowerCase())) {
    state.groups.delete(g.group);
    if (state.current === '#' + g.group) open('*');
  } else {
    const old = state.groups.get(g.group);
    state.groups.set(g.group, { ...g, unread: old ? old.unread : 0 });
  }
  render();
}

function presence(email, online) {
  const f = state.friends.get(email.toLowerCase());
  if (f) { f.online = online; render(); }
}

function typing(d) {
  const key = d.group ? '#' + d.group : '@' + d.from.toLowerCase();
  if (!d.typing) return stopTyping(key, d.from);
  if (!state.typing.has(key)) state.typing.set(key, new Map());
  const m = state.typing.get(key);
  clearTimeout(m.get(d.from));
  // The server ends a typing after 10 s; this is the fallback for a lost `false`.
  m.set(d.from, setTimeout(() => stopTyping(key, d.from), 12000));
  renderTyping();
}

function stopTyping(key, who) {
  const m = state.typing.get(key);
  if (m && m.has(who)) { clearTimeout(m.get(who)); m.delete(who); renderTyping(); }
}

function readMark(d) {
  if ((d.reader || '').toLowerCase() === state.me?.email.toLowerCase()) {
    // Our other device read it: the count goes.
    const key = d.group ? '#' + d.group : '@' + d.with.toLowerCase();
    const who = key.startsWith('@') ? state.friends.get(key.slice(1)) : state.groups.get(key.slice(1));
    if (who) who.unread = 0;
  } else {
    const e = d.reader.toLowerCase();
    state.readBy.set(e, Math.max(Number(d.upto), state.readBy.get(e) || 0));
  }
  render();
}

function ringing(email) {
  state.ringing = email;
  const box = $('call');
  box.hidden = false;
  box.replaceChildren(
    text(`${email} is calling. (Audio needs a native client; you can answer or refuse here.)`),
    button('Accept', () => { send({ type: 'voice', event: 'accept', details: { email } }); }),
    button('Reject', () => { send({ type: 'voice', event: 'reject', details: { email } }); state.ringing = null; box.hidden = true; }),
  );
}

function renderCall(textContent) {
  const box = $('call');
  box.hidden = false;
  box.replaceChildren(text(textContent), button('Dismiss', () => { box.hidden = true; }));
}

function refreshUnread() {
  ask({ type: 'unread' }, 'unread', r => {
    for (const u of r.details || []) {
      if (u.with) {
        const f = state.friends.get(u.with.toLowerCase());
        if (f) f.unread = u.count;
      } else if (state.groups.has(u.group)) {
        state.groups.get(u.group).unread = u.count;
      }
    }
    render();
  });
}

// ---- actions ----
function target(key) {
  return key.startsWith('#') ? { group: key.slice(1) } : { with: key.slice(1) };
}

function loadHistory(key, fresh) {
  if (key === '*') return;
  const c = conv(key);
  const details = { ...target(key), limit: 50 };
  if (!fresh && c.oldest) details.before = c.oldest;
  ask({ type: 'history', details }, 'history', r => {
    if (r.event !== 'success') return note(r.message);
    const items = r.details || [];
    for (const it of items) {
      c.items.set(it.id, it);
      if (!c.oldest || Number(it.id) < Number(c.oldest)) c.oldest = it.id;
    }
    if (!fresh || !c.loaded) c.more = items.length === 50;
    c.loaded = true;
    render();
    if (key === state.current) markRead(key);
  });
}

function markRead(key) {
  if (key === '*') return;
  const c = conv(key);
  const mine = state.me?.email.toLowerCase();
  const ids = [...c.items.values()].filter(i => i.id && (i.from || '').toLowerCase() !== mine).map(i => Number(i.id));
  if (!ids.length) return;
  const upto = String(Math.max(...ids));
  if (c.readUpto === upto) return;
  c.readUpto = upto;
  send({ type: 'read', details: { ...target(key), upto } });
  const who = key.startsWith('@') ? state.friends.get(key.slice(1)) : state.groups.get(key.slice(1));
  if (who) who.unread = 0;
}

function open(key) {
  state.current = key;
  const c = conv(key);
  if (!c.loaded) loadHistory(key, true); else markRead(key);
  render();
  $('text').focus();
}

let typingSent = 0;
function onTyping() {
  if (state.current === '*' || !$('text').value) return;
  const now = Date.now();
  if (now - typingSent < 3000) return;
  typingSent = now;
  const t = target(state.current);
  send({ type: 'typing', details: { ...(t.group ? { group: t.group } : { to: t.with }), typing: true } });
}

// `sent` and `failed` answers carry no client_id, so they are matched to `state.pending` in
// order: the server answers one connection's requests in order. A global message gets no
// answer unless it breaks a field rule, so it must never reach the server breaking one, or
// its `failed` would be taken for a pending send's: the one rule text can break is the
// length, checked here (the input's maxlength keeps to it too).
const MAX_CHARS = 4096;

function sendMessage(textValue) {
  if ([...textValue].length > MAX_CHARS) return note(`Not sent: a message has at most ${MAX_CHARS} characters.`);
  const key = state.current;
  const clientId = `w${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const time = Math.floor(Date.now() / 1000);
  let req;
  if (key === '*') req = { event: 'global', type: 'message', details: { message: textValue, time } };
  else if (key.startsWith('#')) req = { event: 'group', type: 'message', details: { group: key.slice(1), message: textValue, time, client_id: clientId } };
  else req = { event: 'personal', type: 'message', details: { to: key.slice(1), message: textValue, time, client_id: clientId } };
  const item = { tmp: clientId, from: state.me.email, message: textValue, time, ...(key.startsWith('#') ? { group: key.slice(1) } : {}), to: key.slice(1) };
  if (key === '*') {
    send(req);
    return;
  }
  conv(key).items.set(clientId, item);
  state.pending.push({ req, key, item });
  send(req);
  typingSent = 0;
  render();
}

// ---- rendering ----
// A friend's username where we know it, else the email.
function nameOf(email) {
  const f = state.friends.get((email || '').toLowerCase());
  return f && f.username ? f.username : email || '';
}

function text(t) { const s = document.createElement('span'); s.textContent = t; return s; }
function button(label, onclick, cls) {
  const b = document.createElement('button');
  b.textContent = label; b.onclick = onclick; if (cls) b.className = cls;
  return b;
}

function render() {
  if (!state.me) return;
  const convs = $('convs');
  convs.replaceChildren(entry('*', 'Everyone', '', 0));
  for (const [e, f] of state.friends) {
    convs.append(entry('@' + e, f.username, f.online ? 'online' : 'offline', f.unread));
  }
  const groups = $('groups');
  groups.replaceChildren(...[...state.groups.values()].map(g => entry('#' + g.group, g.name, `${g.members.length} members`, g.unread)));
  renderConv();
}

function entry(key, label, sub, unread) {
  const li = document.createElement('li');
  li.className = key === state.current ? 'current' : '';
  const b = document.createElement('button');
  b.className = 'entry';
  if (key.startsWith('@')) {
    const dot = document.createElement('span');
    dot.className = 'dot ' + sub;
    dot.title = sub;
    b.append(dot);
  }
  b.append(text(label));
  if (sub && !key.startsWith('@')) { const s = text(sub); s.className = 'sub'; b.append(s); }
  if (unread) { const u = text(String(unread)); u.className = 'badge'; b.append(u); }
  b.onclick = () => open(key);
  li.append(b);
  return li;
}

function renderConv() {
  const key = state.current;
  const c = conv(key);
  let title = 'Everyone', info = 'the global channel: messages to everyone online (not stored)';
  if (key.startsWith('@')) {
    const f = state.friends.get(key.slice(1));
    title = f ? f.username : key.slice(1);
    info = `${key.slice(1)} · ${f && f.online ? 'online' : 'offline'}`;
  } else if (key.startsWith('#')) {
    const g = state.groups.get(key.slice(1));
    title = g ? g.name : 'group';
    info = g ? `${g.members.join(', ')} · owner ${g.owner}` : '';
  }
  $('conv-title').textContent = title;
  $('conv-info').textContent = info;
  $('add-member').hidden = !key.startsWith('#');
  $('leave-group').hidden = !key.startsWith('#');
  $('block-user').hidden = !key.startsWith('@');
  const list = $('messages');
  const items = [...c.items.values()].sort((a, b) => (a.id && b.id ? Number(a.id) - Number(b.id) : a.id ? -1 : b.id ? 1 : 0));
  const nodes = [];
  if (key !== '*' && c.more && c.loaded) {
    const li = document.createElement('li');
    li.className = 'more';
    li.append(button('Older messages', () => loadHistory(key, false)));
    nodes.push(li);
  }
  const mine = state.me.email.toLowerCase();
  const readUpto = key.startsWith('@') ? state.readBy.get(key.slice(1)) || 0 : 0;
  for (const it of items) {
    const li = document.createElement('li');
    const own = (it.from || '').toLowerCase() === mine;
    li.className = own ? 'own' : '';
    const who = text(own ? 'you' : nameOf(it.from));
    who.title = it.from || '';
    who.className = 'from';
    const when = text(it.time ? new Date(it.time * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');
    when.className = 'time';
    const body = text(it.message || '');
    body.className = 'body';
    li.append(who, when, body);
    if (own && it.tmp) { const s = text('sending…'); s.className = 'state'; li.append(s); }
    else if (own && readUpto && Number(it.id) <= readUpto) { const s = text('read'); s.className = 'state read'; li.append(s); }
    if (it.id) li.dataset.id = it.id;
    nodes.push(li);
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...nodes);
  if (atBottom) list.scrollTop = list.scrollHeight;
  renderTyping();
}

function renderTyping() {
  const m = state.typing.get(state.current);
  const who = m ? [...m.keys()].map(nameOf) : [];
  $('typing').textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ---- wiring ----
function formValues(form) { return Object.fromEntries(new FormData(form)); }

$('login-form').onsubmit = e => {
  e.preventDefault();
  const v = formValues(e.target);
  const who = v.name.includes('@') ? { email: v.name } : { username: v.name };
  state.login = { type: 'login', details: { ...who, password: md5(v.password), acks: true, subscribe: ['presence', 'typing', 'read'] } };
  authMsg('');
  send(state.login);
};

$('register-form').onsubmit = e => {
  e.preventDefault();
  const v = formValues(e.target);
  state.resetting = false;
  send({ type: 'registration', details: { email: v.email, username: v.username, password: md5(v.password) } });
};

$('otp-form').onsubmit = e => {
  e.preventDefault();
  send({ type: 'verify', otp: formValues(e.target).otp.trim() });
};

$('reset-form').onsubmit = e => {
  e.preventDefault();
  const v = formValues(e.target);
  if (!state.resetting) {
    state.resetting = true;
    send({ type: 'reset', details: { email: v.email } });
    return;
  }
  ask({ type: 'reset', details: { email: v.email, otp: v.otp.trim(), password: md5(v.password) } }, 'reset', r => {
    authMsg(r.event === 'success' ? 'Password changed. Log in with the new one.' : r.message);
    if (r.event === 'success') state.resetting = false;
  });
};

$('send-form').onsubmit = e => {
  e.preventDefault();
  const t = $('text').value.trim();
  if (!t || !state.me) return;
  $('text').value = '';
  sendMessage(t);
};
$('text').oninput = onTyping;

$('logout').onclick = () => send({ type: 'logout' });

$('new-group').onclick = () => {
  const name = prompt('Name of the new group');
  if (!name) return;
  const members = (prompt('Members (emails, separated by commas)') || '').split(',').map(s => s.trim()).filter(Boolean);
  ask({ type: 'group', event: 'create', details: { name, members } }, 'group', r => {
    if (r.event !== 'success') return note(r.message);
    groupChanged(r.details);
    open('#' + r.details.group);
  });
};

$('add-member').onclick = () => {
  const email = prompt('Email of the new member');
  if (!email) return;
  ask({ type: 'group', event: 'add', details: { group: state.current.slice(1), members: [email.trim()] } }, 'group', r => {
    if (r.event !== 'success') return note(r.message);
    groupChanged(r.details);
  });
};

$('leave-group').onclick = () => {
  if (!confirm('Leave this group?')) return;
  ask({ type: 'group', event: 'leave', details: { group: state.current.slice(1) } }, 'group', r => {
    if (r.event !== 'success') return note(r.message);
    state.groups.delete(r.details.group);
    open('*');
  });
};

$('block-user').onclick = () => {
  const email = state.current.slice(1);
  if (!confirm(`Block ${email}? They can no longer message or call you, and you appear offline to them.`)) return;
  ask({ type: 'block', details: { email } }, 'block', r => note(r.event === 'success' ? `${email} is blocked.` : r.message));
};

$('blocked-list').onclick = () => {
  ask({ type: 'blocked' }, 'blocked', r => {
    const list = r.details || [];
    if (!list.length) return note('You block nobody.');
    const email = prompt(`You block: ${list.join(', ')}\nType one of them to unblock it:`);
    if (email) ask({ type: 'unblock', details: { email: email.trim() } }, 'unblock', u => note(u.event === 'success' ? 'Unblocked.' : u.message));
  });
};

$('load-users').onclick = () => {
  ask({ type: 'users' }, 'users', r => {
    const ul = $('users');
    ul.replaceChildren(...(r.details || []).filter(u => u.email !== state.me.email).map(u => {
      const li = document.createElement('li');
      li.append(button(u.username, () => {
        const e = u.email.toLowerCase();
        if (!state.friends.has(e)) state.friends.set(e, { email: u.email, username: u.username, online: false, unread: 0 });
        open('@' + e);
      }, 'entry'));
      return li;
    }));
  });
};

$('change-password').onclick = () => {
  const old = prompt('Current password');
  if (!old) return;
  const fresh = prompt('New password');
  if (!fresh) return;
  ask({ type: 'password', details: { old: md5(old), new: md5(fresh) } }, 'password', r => {
    if (r.event === 'success') {
      state.login.details.password = md5(fresh);
      note('Password changed; your other devices were logged out.');
    } else note(r.message);
  });
};

$('delete-account').onclick = () => {
  if (!confirm('Delete your account and every message of it? This cannot be undone.')) return;
  const pw = prompt('Your password, to confirm');
  if (!pw) return;
  ask({ type: 'delete', details: { password: md5(pw) } }, 'delete', r => {
    if (r.event === 'success') loggedOut('Your account is deleted.'); else note(r.message);
  });
};

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.me) markRead(state.current);
});

window.natter = { state, md5 }; // for the browser tests and the curious
connect();
