//! CPU time and peak memory of a process tree, from /proc (Linux).

use std::collections::HashMap;

/// Resource use of a process and all its descendants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_secs: f64,
    /// Sum of the processes' peak resident set sizes, in bytes.
    pub peak_rss: u64,
}

fn ticks_per_sec() -> f64 {
    // Linux reports /proc times in USER_HZ, which is 100 on every mainstream architecture.
    100.0
}

/// (ppid, utime+stime ticks) of one process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// The parent of process `pid`, if it is alive.
pub fn parent(pid: u32) -> Option<u32> {
    stat(pid).map(|(ppid, _)| ppid)
}

/// Nanoseconds of CPU the live threads of process `pid` have run (`/proc/<pid>/task/*/schedstat`:
/// nanosecond resolution, where `/proc/<pid>/stat` counts 10 ms ticks). Threads that have
/// exited no longer count.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A memory field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`, ...), in bytes (0 if unknown).
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM")
}

/// Current resident set size of one process, in bytes.
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// Usage of `root` and every live descendant.
pub fn tree_usage(root: u32) -> Usage {
    let mut parent: HashMap<u32, (u32, u64)> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.filter_map(Result::ok) {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(st) = stat(pid)
            {
                parent.insert(pid, st);
            }
        }
    }
    let in_tree = |mut pid: u32| -> bool {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent.get(&pid) {
                Some((pp, _)) if *pp != 0 && *pp != pid => pid = *pp,
                _ => return false,
            }
        }
        false
    };
    let mut u = Usage::default();
    for (&pid, &(_, ticks)) in &parent {
        if in_tree(pid) {
            u.cpu_secs += ticks as f64 / ticks_per_sec();
            u.peak_rss += peak_rss(pid);
        }
    }
    u
}
