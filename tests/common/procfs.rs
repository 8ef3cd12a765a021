//! A process's own figures from /proc: memory, open descriptors, CPU time, thread niceness.

use std::collections::HashMap;

/// A field of /proc/PID/status in KiB (`"VmRSS:"`: resident now; `"VmHWM:"`: the peak so far).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Open descriptors.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").count()
}

/// Open descriptors numbered below `limit`.
pub fn fds_below(pid: u32, limit: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(|s| s.parse::<usize>().ok()).is_some_and(|fd| fd < limit))
        .count()
}

/// utime + stime of the process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = &s[s.rfind(')').expect("comm in /proc/PID/stat") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f[14 - 3].parse().unwrap();
    let stime: u64 = f[15 - 3].parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (utime + stime) as f64 / hz
}

/// Thread name -> nice value, from /proc/PID/task/*/stat.
pub fn thread_nice_values(pid: u32) -> HashMap<String, i32> {
    let mut nice = HashMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    for task in tasks.flatten() {
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // "tid (comm) state ppid ...": the name may hold spaces, so split after its ')'.
        let (head, rest) = stat.rsplit_once(')').expect("stat has a (comm)");
        let name = head.split_once('(').expect("stat has a (comm)").1.to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field 19 overall is the 17th after the name (fields 3.. start at index 0).
        nice.insert(name, fields[16].parse::<i32>().expect("nice is a number"));
    }
    nice
}
