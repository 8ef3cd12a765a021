//! Latency samples and the counts every workload keeps to prove it lost nothing.

/// Latency samples in nanoseconds.
#[derive(Default)]
pub struct Samples {
    ns: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub fn push(&mut self, ns: u64) {
        self.ns.push(ns);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// The q-quantile (0..=1) in microseconds; 0 when there are no samples.
    pub fn quantile_us(&mut self, q: f64) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        if !self.sorted {
            self.ns.sort_unstable();
            self.sorted = true;
        }
        let i = ((self.ns.len() - 1) as f64 * q).round() as usize;
        self.ns[i] as f64 / 1000.0
    }
}

/// What arrived against what was expected, per stream, by sequence number.
pub struct Ledger {
    /// Per stream: the next sequence number expected (streams are in order).
    next: Vec<u64>,
    pub expected: u64,
    pub received: u64,
    pub lost_or_reordered: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

impl Ledger {
    pub fn new(streams: usize, expected: u64) -> Ledger {
        Ledger { next: vec![0; streams], expected, received: 0, lost_or_reordered: 0, duplicated: 0, corrupted: 0 }
    }

    /// Records sequence `seq` of stream `s`, which must arrive in order.
    pub fn record(&mut self, s: usize, seq: u64) {
        let Some(next) = self.next.get_mut(s) else {
            self.corrupted += 1;
            return;
        };
        if seq == *next {
            *next += 1;
            self.received += 1;
        } else if seq < *next {
            self.duplicated += 1;
        } else {
            self.lost_or_reordered += seq - *next;
            *next = seq + 1;
            self.received += 1;
        }
    }

    /// Errors: anything lost, duplicated or corrupted, as one line, or `None`.
    pub fn errors(&self) -> Option<String> {
        let missing = self.expected.saturating_sub(self.received);
        if missing == 0 && self.duplicated == 0 && self.corrupted == 0 && self.lost_or_reordered == 0 {
            return None;
        }
        Some(format!(
            "expected {} received {} (missing {missing}, out of order {}, duplicated {}, corrupted {})",
            self.expected, self.received, self.lost_or_reordered, self.duplicated, self.corrupted
        ))
    }
}

/// CPU seconds (user + system) of a process from /proc; `None` when unreadable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz)
}

/// Resident set size of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_counts_gaps_duplicates_and_strangers() {
        let mut l = Ledger::new(2, 6);
        for s in [0, 1, 2] {
            l.record(0, s);
        }
        l.record(1, 0);
        l.record(1, 0);
        l.record(1, 2);
        l.record(7, 0);
        assert_eq!((l.received, l.duplicated, l.lost_or_reordered, l.corrupted), (5, 1, 1, 1));
        assert!(l.errors().is_some());
    }

    #[test]
    fn quantiles() {
        let mut s = Samples::default();
        for i in 1..=1000 {
            s.push(i * 1000);
        }
        assert_eq!(s.quantile_us(0.5), 501.0);
        assert_eq!(s.quantile_us(0.99), 990.0);
        assert_eq!(s.quantile_us(1.0), 1000.0);
    }
}
