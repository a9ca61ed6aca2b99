//! Run statistics and memory of loaded programs, read at scrape time: what the kernel counts
//! while run statistics are on (`BPF_ENABLE_STATS`, held as an fd: stats stop when the daemon
//! does, unlike the sysctl), and the memory a program and its maps hold.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use aya::maps::MapInfo;
use aya::programs::ProgramInfo;

use crate::error::{Error, Result};

/// What the kernel says about one program now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Kernel program id.
    pub id: u32,
    /// Runs counted while run statistics were on.
    pub run_count: u64,
    /// Time spent running, counted while run statistics were on.
    pub run_time_ns: u64,
    /// Runs skipped because the program was already running on that CPU (5.12+; None
    /// where the kernel does not report it).
    pub recursion_misses: Option<u64>,
    /// Instructions the verifier processed (5.16+; 0 when unknown).
    pub verified_insns: u32,
    /// Size of the JIT image.
    pub jited_bytes: u32,
    /// Memory the program itself holds (`memlock`).
    pub memlock_bytes: u64,
    /// Memory its maps hold (`memlock` of each map; a map shared by several programs counts
    /// for each).
    pub map_memlock_bytes: u64,
}

/// What does not change while a program id lives (its memory and its maps' memory), kept
/// across scrapes so a scrape reads only what moves: the run statistics.
#[derive(Debug, Default)]
pub struct StatsCache {
    programs: HashMap<u32, (u64, u64)>,
    seen: std::collections::HashSet<u32>,
}

impl StatsCache {
    /// Forgets programs not read since the last call (ids the kernel may reuse).
    pub fn prune(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.programs.retain(|id, _| seen.contains(id));
    }
}

/// A field of `/proc/self/fdinfo/<fd>`.
fn fdinfo_fields(fd: impl AsRawFd) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse::<u64>().ok()?))
        })
        .collect()
}

/// Reads a pinned program's statistics; memory figures come from `cache` after the first
/// read of a program id.
pub fn program_stats(pin: &Path, cache: &mut StatsCache) -> Result<ProgramStats> {
    let info = ProgramInfo::from_pin(pin).map_err(|e| {
        Error::internal(format!("reading program pinned at {}: {e}", pin.display()))
    })?;
    let id = info.id();
    cache.seen.insert(id);
    // Recursion misses move, and only the program's fdinfo has them.
    let fd = info
        .fd()
        .map_err(|e| Error::internal(format!("opening program {id}: {e}")))?;
    let fields = fdinfo_fields(fd.as_fd().as_raw_fd());
    drop(fd);
    let (memlock, maps) = match cache.programs.get(&id) {
        Some(v) => *v,
        None => {
            let mut maps = 0u64;
            for map in info.map_ids().ok().flatten().unwrap_or_default() {
                maps += MapInfo::from_id(map)
                    .and_then(|m| m.fd())
                    .map(|fd| {
                        fdinfo_fields(fd.as_fd().as_raw_fd())
                            .get("memlock")
                            .copied()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
            }
            let v = (fields.get("memlock").copied().unwrap_or(0), maps);
            cache.programs.insert(id, v);
            v
        }
    };
    Ok(ProgramStats {
        id: info.id(),
        run_count: info.run_count(),
        run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
        recursion_misses: fields.get("recursion_misses").copied(),
        verified_insns: info.verified_instruction_count().unwrap_or(0),
        jited_bytes: info.size_jitted(),
        memlock_bytes: memlock,
        map_memlock_bytes: maps,
    })
}

/// Whether kernel run statistics are on now, by anyone (the sysctl shows the static key
/// that `BPF_ENABLE_STATS` fds also hold on).
pub fn run_stats_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// Turns kernel run statistics on for as long as the returned fd is open (Linux 5.8+,
/// CAP_SYS_ADMIN).
pub fn enable_run_stats() -> Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
        Error::unsupported(format!(
            "BPF_ENABLE_STATS failed ({e}): kernel run statistics need Linux 5.8 or newer and CAP_SYS_ADMIN"
        ))
    })
}
