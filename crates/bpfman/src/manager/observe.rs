//! What the daemon's metrics read at scrape time: every managed program with the kernel's
//! statistics for it, and every managed link with whether the kernel still has it where the
//! store says. Read-only and best effort (no gate: a scrape never waits for a load); the
//! endpoint serves whoever may reach it, so this is the daemon's view, not a caller's.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::Manager;
use crate::error::Result;
use crate::kernel::stats::ProgramStats;
use crate::metrics::Events;

/// One managed program.
#[derive(Debug, Clone)]
pub struct ProgramSample {
    pub id: u32,
    pub name: String,
    /// bpfman's program kind (xdp, tc, tracepoint, ...).
    pub kind: String,
    /// The owner's uid.
    pub owner: u32,
    pub metadata: BTreeMap<String, String>,
    /// None when the kernel could not be asked (the pin vanished since the store was read).
    pub stats: Option<ProgramStats>,
}

/// One managed link.
#[derive(Debug, Clone)]
pub struct LinkSample {
    pub id: u32,
    pub program_id: u32,
    pub kind: String,
    /// What it is attached to (`eth0 ingress`, `syscalls/sys_enter_openat`, ...).
    pub target: String,
    /// Whether the kernel still has it where the store says.
    pub attached: bool,
    /// Position on a shared hook (0 first), when the hook orders programs.
    pub position: Option<i32>,
    /// Priority on a shared hook, for network links.
    pub priority: Option<i32>,
}

/// Every managed program and link, now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub programs: Vec<ProgramSample>,
    pub links: Vec<LinkSample>,
}

/// Kernel run statistics are on while this lives.
#[derive(Debug)]
pub struct RunStats(#[allow(dead_code)] OwnedFd);

impl Manager {
    /// The daemon's event counters (requests are counted by the daemon's server).
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Turns kernel run statistics on until the returned guard is dropped.
    pub fn enable_run_stats(&self) -> Result<RunStats> {
        crate::kernel::stats::enable_run_stats().map(RunStats)
    }

    /// Whether kernel run statistics are on now (held by this daemon or anyone else).
    pub fn run_stats_on(&self) -> bool {
        crate::kernel::stats::run_stats_on()
    }

    /// A managed program's run count and run time (ns), when run statistics are on.
    pub fn run_stats(&self, p: &crate::model::Program) -> Option<(u64, u64)> {
        if !self.run_stats_on() {
            return None;
        }
        let s = self
            .kernel
            .program_stats(
                Path::new(&p.pin_path),
                &mut crate::kernel::stats::StatsCache::default(),
            )
            .ok()?;
        Some((s.run_count, s.run_time_ns))
    }

    /// Every managed program and link, with what the kernel says about them now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut cache = self.stats_cache.lock().unwrap_or_else(|p| p.into_inner());
        let programs = self
            .store
            .programs()?
            .into_iter()
            .map(|p| ProgramSample {
                stats: self
                    .kernel
                    .program_stats(Path::new(&p.pin_path), &mut cache)
                    .ok(),
                id: p.id,
                name: p.name,
                kind: p.kind.to_string(),
                owner: p.owner.uid,
                metadata: p.metadata,
            })
            .collect();
        cache.prune();
        drop(cache);
        // Dispatched hooks: whether each runs what the store records, asked once per hook.
        let mut hooks: HashMap<String, bool> = HashMap::new();
        let mut links = Vec::new();
        for l in self.store.links(None)? {
            let pinned = !l.pin_path.is_empty()
                && self.bpffs.present(Path::new(&l.pin_path)).unwrap_or(false);
            let own_link = l.kernel_link_id == 0
                || self
                    .kernel
                    .exists(crate::kernel::ids::Object::Link, l.kernel_link_id);
            let hook_ok = match (
                &l.hook,
                l.hook
                    .as_ref()
                    .and_then(|h| self.dispatch_kind(&l.spec).map(|k| (h, k))),
            ) {
                (Some(_), Some((h, kind))) => *hooks.entry(h.to_string()).or_insert_with(|| {
                    let Ok(Some(rec)) = self.store.dispatcher(h) else {
                        return false;
                    };
                    let Ok(on_hook) = self.dispatched_links(h, kind) else {
                        return false;
                    };
                    self.hook_runs_records(h, &rec, &on_hook).unwrap_or(false)
                }),
                _ => true,
            };
            links.push(LinkSample {
                id: l.id,
                program_id: l.program_id,
                kind: l.spec.name().to_string(),
                target: l.spec.target(),
                attached: pinned && own_link && hook_ok,
                position: l.hook.is_some().then_some(l.position),
                priority: l.spec.net_hook().map(|h| h.priority),
            });
        }
        Ok(Snapshot { programs, links })
    }
}
