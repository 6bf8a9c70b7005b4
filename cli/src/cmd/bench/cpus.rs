//! Which cores a benchmark's processes run on. In a pod the runtime container's CPU limit is its
//! own and the mesh sidecar has its own request, so the model's threads and the relay do not
//! take turns on the same cores; on a small machine a benchmark can only show that by pinning:
//! the runtime on the last cores, the rest (the client, the mesh, a reference proxy) on the
//! first. Pinning goes through util-linux's `taskset`, present on every Debian-like system.

use anyhow::{Context, bail};
use std::process::{Command, Stdio};

/// A split of the machine's cores: `front` for the client and the proxies, `back` for the
/// runtime.
#[derive(Debug, Clone)]
pub struct Split {
    /// `taskset` list of the client's and the proxies' cores, e.g. `0` or `0,1,2`.
    pub front: String,
    /// `taskset` list of the runtime's cores, e.g. `1` or `3`.
    pub back: String,
    /// Cores in `back`.
    pub back_cores: usize,
}

impl Split {
    /// The last `back` of the cores this process may run on for the runtime, the others for
    /// everything else.
    pub fn new(back: usize) -> anyhow::Result<Split> {
        let cores = allowed_cores();
        let n = cores.len();
        if back == 0 || back >= n {
            bail!("cannot give the runtime {back} of {n} cores and keep one for the rest");
        }
        let list = |c: &[usize]| c.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        Ok(Split {
            front: list(&cores[..n - back]),
            back: list(&cores[n - back..]),
            back_cores: back,
        })
    }
}

/// The cores this process may run on (`Cpus_allowed_list` in /proc/self/status, e.g.
/// `0-3,8`); cores 0..N when it cannot be read.
pub fn allowed_cores() -> Vec<usize> {
    let listed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| parse_list(l.trim()))
        })
        .unwrap_or_default();
    if listed.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    listed
}

/// A kernel CPU list (`0-3,8,10-11`) as core numbers; an unreadable part is skipped.
fn parse_list(list: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// Pins every thread of process `pid` to the cores in `list` (its children started later
/// inherit it).
pub fn pin(pid: u32, list: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", list, &pid.to_string()])
        .stdout(Stdio::null())
        .output()
        .context("running taskset (util-linux) to pin a benchmark process")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {list} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Pins `pid` and every process below it to `list`.
pub fn pin_tree(pid: u32, list: &str) -> anyhow::Result<()> {
    pin(pid, list)?;
    for child in children(pid) {
        pin_tree(child, list)?;
    }
    Ok(())
}

/// The processes whose parent is `pid` (from /proc; a process gone meanwhile is skipped).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| super::procstat::parent(*p) == Some(pid))
        .collect()
}

/// Whether process `pid` runs `name` (its executable's file name).
pub fn runs(pid: u32, name: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .is_some_and(|f| f == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list("1"), vec![1]);
        assert_eq!(parse_list(""), Vec::<usize>::new());
        assert!(!allowed_cores().is_empty());
    }

    #[test]
    fn this_process_has_a_parent_and_is_its_child() {
        let me = std::process::id();
        let up = super::super::procstat::parent(me).expect("a parent");
        assert!(children(up).contains(&me));
    }
}
