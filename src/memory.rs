//! How much memory a run may use, and the check made before anything large is allocated: a
//! run that cannot fit is refused with E0511, saying how much it needs, rather than aborting
//! when an allocation fails half-way through. Shared by the compiled engine and the runtime.

use crate::diagnostics::{Code, Diagnostic};

/// Bytes this process may use: the cgroup's limit when it has one, else physical memory.
/// `NETC_MEMORY_LIMIT` (bytes) overrides both, for tests and for sharing a machine.
pub fn limit() -> u64 {
    if let Some(bytes) = std::env::var("NETC_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return bytes;
    }
    [cgroup_limit(), physical()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
}

/// Refuses a run that needs more than `limit()`: `needed` is `None` when counting it overflowed.
pub fn ensure(needed: Option<u64>, what: &str) -> Result<(), Diagnostic> {
    match needed {
        Some(bytes) if bytes <= limit() => Ok(()),
        _ => Err(too_large(needed, what)),
    }
}

/// The E0511 diagnostic: `what` needs `needed` bytes (`None`: more than 2^64).
pub fn too_large(needed: Option<u64>, what: &str) -> Diagnostic {
    let needed = needed.map_or("more than 2^64 bytes".to_string(), gib);
    Diagnostic::plain(
        Code::E0511,
        format!("{what} need {needed}, but this process may use {}", gib(limit())),
    )
    .with_help("use a smaller `--batch` or smaller layers (`netc check --summary` lists what each layer holds)")
}

/// Bytes of `elements` values of `bytes_each`, or `None` on overflow.
pub fn bytes(elements: u64, bytes_each: u64) -> Option<u64> {
    elements.checked_mul(bytes_each)
}

/// A byte count as people read it.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The limit of this process's cgroup (v2 `memory.max`, or v1 `memory.limit_in_bytes`).
fn cgroup_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let file = match controllers {
            "" => format!("/sys/fs/cgroup{path}/memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            }
            _ => return None,
        };
        // "max" (no limit) and unreadable files parse to nothing.
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

/// Physical memory, from `/proc/meminfo`.
fn physical() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
