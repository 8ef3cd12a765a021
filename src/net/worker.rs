//! The helper threads for blocking work: password hashing and OTP mail.
//!
//! Jobs go out over channels; results come back over one channel and a `mio::Waker`, so the
//! event loop learns of them in its next poll. Mail has a thread of its own so that a slow
//! SMTP server never delays a login, and hashing has a small pool. The threads hold no chat
//! state: a result for a connection that has gone meanwhile is dropped by the core.
//! Overflow policy: the job queues are unbounded, but each job belongs to a connection that
//! is `busy` and reads nothing until its job is done, so at most one job per connection
//! is ever queued.

use crate::chat::{Job, JobDone};
use crate::mailer::Mailer;
use crate::password::{self, HashParams};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

/// Handles to the worker threads. Dropping it closes the job channels and the threads end.
pub struct Workers {
    hash_jobs: Sender<Job>,
    mail_jobs: Sender<Job>,
    done: Receiver<JobDone>,
    /// The loop left finished jobs in the channel (it takes a bounded number per iteration)
    /// and must come back without waiting for the waker, which they already used.
    pub(super) more: bool,
}

impl Workers {
    /// Starts `hash_threads` hashing threads and one mail thread.
    pub fn start(
        hash_threads: usize,
        params: HashParams,
        mailer: Mailer,
        otp_lifetime_min: u64,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Workers> {
        let (done_tx, done) = channel();
        let (hash_jobs, hash_rx) = channel::<Job>();
        let hash_rx = Arc::new(Mutex::new(hash_rx));
        for i in 0..hash_threads {
            let rx = Arc::clone(&hash_rx);
            let tx = done_tx.clone();
            let waker = Arc::clone(&waker);
            thread::Builder::new().name(format!("natter-hash-{i}")).spawn(move || {
                super::priority::lower_this_thread();
                loop {
                    // The lock is held only while waiting for the next job, never while hashing.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if tx.send(run_hash_job(params, job)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        }
        let (mail_jobs, mail_rx) = channel::<Job>();
        thread::Builder::new().name("natter-mail".into()).spawn(move || {
            for job in mail_rx {
                let Job::SendOtp { conn, to, otp, reset } = job else {
                    continue;
                };
                let result = mailer.send_otp(&to, &otp, otp_lifetime_min, reset);
                if done_tx.send(JobDone::OtpSent { conn, result, reset }).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?;
        Ok(Workers { hash_jobs, mail_jobs, done, more: false })
    }

    /// Queues a job for the thread that does its kind of work.
    pub fn submit(&self, job: Job) {
        let queue = match job {
            Job::SendOtp { .. } => &self.mail_jobs,
            Job::HashPassword { .. } | Job::VerifyPassword { .. } => &self.hash_jobs,
        };
        if queue.send(job).is_err() {
            log::error!("a worker thread is gone; the job is lost");
        }
    }

    /// A finished job, if any.
    pub fn try_done(&self) -> Option<JobDone> {
        self.done.try_recv().ok()
    }
}

fn run_hash_job(params: HashParams, job: Job) -> JobDone {
    match job {
        Job::HashPassword { conn, md5 } => {
            let hash = password::hash(params, &md5).map_err(|e| log::error!("password hashing failed: {e}")).ok();
            JobDone::Hashed { conn, hash }
        }
        Job::VerifyPassword { conn, hash, md5 } => JobDone::Verified { conn, ok: password::verify(&hash, &md5) },
        Job::SendOtp { conn, reset, .. } => {
            JobDone::OtpSent { conn, result: Err("mail job sent to the hash pool".into()), reset }
        }
    }
}
