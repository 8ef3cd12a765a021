//! Micro-benchmarks of the per-message hot path, without sockets: finding frames, decoding
//! a personal message, encoding its delivery, and the timer wheel; and one store query that
//! must stay an index walk (`unread`), and a backlog merged over many groups.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use natter::framing::FrameScanner;
use natter::protocol::response::{self, PersonalOut};
use natter::protocol::{decode, Request};
use natter::timer_wheel::TimerWheel;
use std::hint::black_box;

const FRAME: &[u8] = br#"{"event":"personal","type":"message","details":{"to":"bob@example.org","message":"0 1234 5678901234 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","time":1700000000}}"#;

fn framing(c: &mut Criterion) {
    let mut stream = Vec::new();
    for _ in 0..256 {
        stream.extend_from_slice(FRAME);
        stream.push(b'\n');
    }
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Elements(256));
    g.bench_function("scan 256 frames", |b| {
        b.iter(|| {
            let mut s = FrameScanner::new(65536);
            let mut n = 0;
            while let Ok(Some(_)) = s.next_frame(black_box(&stream)) {
                n += 1;
            }
            assert_eq!(n, 256);
        })
    });
    g.finish();
}

fn protocol(c: &mut Criterion) {
    c.bench_function("decode personal message", |b| {
        b.iter(|| match decode(black_box(FRAME)) {
            Ok(Request::Personal(m)) => black_box(m.message.len()),
            _ => panic!("not a personal message"),
        })
    });
    let mut buf = Vec::with_capacity(512);
    let text = "0 1234 5678901234 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    c.bench_function("encode personal message", |b| {
        b.iter(|| {
            buf.clear();
            let m = PersonalOut { id: 123456, message: text, media: None, from: "ann@example.org", time: 1, to: None };
            response::personal(&mut buf, black_box(&m));
            black_box(buf.len())
        })
    });
}

fn timers(c: &mut Criterion) {
    c.bench_function("timer wheel insert+cancel", |b| {
        let mut w: TimerWheel<u64> = TimerWheel::new(10, 1024);
        let mut t = 0u64;
        b.iter(|| {
            t += 7;
            let id = w.insert(t + 60_000, t);
            black_box(w.cancel(id))
        })
    });
    c.bench_function("timer wheel expire 1000", |b| {
        b.iter(|| {
            let mut w: TimerWheel<u64> = TimerWheel::new(10, 1024);
            for i in 0..1000 {
                w.insert(i * 3, i);
            }
            let mut out = Vec::new();
            w.expire(5_000, &mut out);
            assert_eq!(out.len(), 1000);
        })
    });
}

/// `unread` for a user with 200 conversations and 100,000 messages to it, 500 unread in
/// each (issue 14: "answers within a few milliseconds").
fn unread(c: &mut Criterion) {
    use natter::store::messages::NewMessage;
    use natter::store::{Durability, Store};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open(&dir.path().join("u.db"), Durability::Normal, std::time::Duration::from_secs(5))
        .expect("open the store");
    let me = store.insert_user("me@x.org", "me", "h", 0).expect("user");
    let peers: Vec<i64> =
        (0..200).map(|i| store.insert_user(&format!("p{i}@x.org"), &format!("p{i}"), "h", 0).expect("user")).collect();
    for (n, &p) in peers.iter().enumerate() {
        store.add_contact(me, p, 1).expect("contact");
        for _ in 0..500 {
            let m = NewMessage {
                sender: p,
                recipient: me,
                body: "hello there",
                media: None,
                client_time: 0,
                server_time: 0,
                client_id: None,
            };
            store.insert_message(&m).expect("message");
        }
        if n % 20 == 19 {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    g.bench_function("unread, 200 conversations, 100,000 messages", |b| {
        b.iter(|| store.unread(me).expect("unread").len())
    });
    g.finish();
}

/// Reading a backlog of 10,000 group messages spread over G groups, as a login after a
/// day offline does (issue 17: per message, 499 groups should cost about what one does).
fn backlog(c: &mut Criterion) {
    use natter::store::groups::NewGroupMessage;
    use natter::store::{Durability, Store};
    let mut g = c.benchmark_group("backlog");
    g.sample_size(20);
    g.throughput(Throughput::Elements(10_000));
    for groups in [1usize, 20, 100, 499] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = Store::open(&dir.path().join("b.db"), Durability::Normal, std::time::Duration::from_secs(5))
            .expect("open the store");
        let me = store.insert_user("me@x.org", "me", "h", 0).expect("user");
        let other = store.insert_user("o@x.org", "o", "h", 0).expect("user");
        let ids: Vec<i64> =
            (0..groups).map(|i| store.create_group(&format!("g{i}"), other, 0).expect("group")).collect();
        for &id in &ids {
            store.add_group_member(id, other, 1, 1).expect("member");
            store.add_group_member(id, me, 2, 1).expect("member");
        }
        let body = "x".repeat(100);
        for i in 0..10_000 {
            let m = NewGroupMessage {
                group: ids[i % groups],
                sender: other,
                body: &body,
                media: None,
                client_time: 0,
                server_time: 0,
                client_id: None,
            };
            store.insert_group_message(&m).expect("message");
        }
        store.commit().expect("commit");
        g.bench_function(format!("10,000 messages over {groups} groups"), |b| {
            b.iter(|| {
                let mut backlog = store.backlog(me, 0).expect("backlog");
                let mut n = 0usize;
                while store
                    .read_backlog(&mut backlog, 2048, |m, _| {
                        n += m.body.len();
                        true
                    })
                    .expect("read")
                {}
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, framing, protocol, timers, unread, backlog);
criterion_main!(benches);
