//! CPU time and resident memory of a process, from /proc (Linux).

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// user + system CPU seconds.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub fds: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    Some(ProcSample { at: Instant::now(), cpu_secs: (utime + stime) / ticks, rss_bytes: rss_kb * 1024, threads, fds })
}

/// CPU use between two samples, in cores (1.0 = one core busy).
pub fn cores_between(a: &ProcSample, b: &ProcSample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        0.0
    } else {
        (b.cpu_secs - a.cpu_secs) / wall
    }
}
