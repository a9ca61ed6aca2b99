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

/// Reads a pinned program's statistics. `map_memlock` caches map memory by map id across
/// one scrape (maps shared between programs are read once).
pub fn program_stats(pin: &Path, map_memlock: &mut HashMap<u32, u64>) -> Result<ProgramStats> {
    let info = ProgramInfo::from_pin(pin).map_err(|e| {
        Error::internal(format!("reading program pinned at {}: {e}", pin.display()))
    })?;
    let fd = info
        .fd()
        .map_err(|e| Error::internal(format!("opening program {}: {e}", info.id())))?;
    let fields = fdinfo_fields(fd.as_fd().as_raw_fd());
    let mut maps = 0u64;
    for id in info.map_ids().ok().flatten().unwrap_or_default() {
        let bytes = *map_memlock.entry(id).or_insert_with(|| {
            MapInfo::from_id(id)
                .and_then(|m| m.fd())
                .map(|fd| {
                    fdinfo_fields(fd.as_fd().as_raw_fd())
                        .get("memlock")
                        .copied()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        });
        maps += bytes;
    }
    Ok(ProgramStats {
        id: info.id(),
        run_count: info.run_count(),
        run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
        recursion_misses: fields.get("recursion_misses").copied(),
        verified_insns: info.verified_instruction_count().unwrap_or(0),
        jited_bytes: info.size_jitted(),
        memlock_bytes: fields.get("memlock").copied().unwrap_or(0),
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
