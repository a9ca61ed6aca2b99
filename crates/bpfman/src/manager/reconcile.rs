//! Reconciliation: make store, bpffs and kernel agree at start-up and on request;
//! every repair is reported as a typed entry.

use super::*;

/// Whether a pin is gone: only when the file system says it does not exist. Any other
/// failure to look (no fd left, say) is reported and counts as present.
pub(super) fn pin_gone(
    fs: &Bpffs,
    pin: &str,
    subject: RepairSubject,
    report: &mut ReconcileReport,
) -> bool {
    match fs.present(Path::new(pin)) {
        Ok(present) => !present,
        Err(e) => {
            report.kept(
                subject,
                format!("pin {pin}: could not check it ({e}); its record is kept"),
            );
            false
        }
    }
}

impl Manager {
    /// Brings store and bpffs into agreement: records whose pins are gone are dropped,
    /// pins no record knows are removed. Returns what it did.
    /// Compares store, bpffs and kernel now and repairs, for a caller the policy lets
    /// `reconcile` (root always; the daemon's background runs ask as itself). Audited.
    pub fn reconcile(&self, caller: Caller) -> Result<ReconcileReport> {
        let what = "reconcile";
        let who = self.precheck(caller, Action::Reconcile, what)?;
        let (_, ticket) = self.decide(caller, &who, &Request::Admin(Action::Reconcile), what)?;
        let r = self.reconcile_with(false);
        ticket.finish(&r);
        r
    }

    /// `at_start`: the daemon has just started, so an operation of the previous process
    /// may have been cut short anywhere (see `reconcile_dispatchers`).
    pub(super) fn reconcile_with(&self, at_start: bool) -> Result<ReconcileReport> {
        let started = std::time::Instant::now();
        let r = self.reconcile_inner(at_start);
        let ev = &self.events;
        ev.reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        match &r {
            Ok(report) => {
                crate::metrics::Events::count(&ev.reconcile_runs, "ok");
                for rep in &report.repairs {
                    let kind = match rep.subject {
                        RepairSubject::Program(_) => "program",
                        RepairSubject::Link(_) => "link",
                        RepairSubject::Pin(_) => "pin",
                        RepairSubject::Dispatcher(_) => "dispatcher",
                    };
                    let outcome = match rep.outcome {
                        super::RepairOutcome::Repaired => "repaired",
                        super::RepairOutcome::Kept => "kept",
                        super::RepairOutcome::Failed => "failed",
                    };
                    ev.reconcile_repairs
                        .get_or_create(&crate::metrics::RepairLabels {
                            kind: kind.into(),
                            outcome: outcome.into(),
                        })
                        .inc();
                }
            }
            Err(_) => crate::metrics::Events::count(&ev.reconcile_runs, "error"),
        }
        r
    }

    fn reconcile_inner(&self, at_start: bool) -> Result<ReconcileReport> {
        // No load, unload, attach or detach is half done while this runs.
        let _gate = self
            .gate
            .write()
            .map_err(|_| Error::internal("lock poisoned"))?;
        let mut report = ReconcileReport::default();
        let links = self.store.links(None)?;
        for l in &links {
            if l.pin_path.is_empty()
                || pin_gone(
                    &self.bpffs,
                    &l.pin_path,
                    RepairSubject::Link(l.id),
                    &mut report,
                )
            {
                report.repaired(
                    RepairSubject::Link(l.id),
                    format!(
                        "link {} (program {}, {}): pin {} is gone; removed the record",
                        l.id,
                        l.program_id,
                        l.spec.target(),
                        if l.pin_path.is_empty() {
                            "(never made)"
                        } else {
                            &l.pin_path
                        }
                    ),
                );
                self.store.delete_link(l.id)?;
            }
        }
        let mut programs = self.store.programs()?;
        // Users before owners, so a map owner goes after the programs that use its maps.
        programs.sort_by_key(|p| std::cmp::Reverse(p.map_owner_id.is_some()));
        for p in &programs {
            if pin_gone(
                &self.bpffs,
                &p.pin_path,
                RepairSubject::Program(p.id),
                &mut report,
            ) {
                for l in self.store.links(Some(p.id))? {
                    // The program is gone, so its links are too; a pin left is removed.
                    if let Err(e) = self.kernel.detach(Path::new(&l.pin_path)) {
                        warn!(link = l.id, "{e}");
                    }
                    self.store.delete_link(l.id)?;
                }
                match self.store.delete_program(p.id) {
                    Ok(()) => report.repaired(
                        RepairSubject::Program(p.id),
                        format!(
                            "program {} ({}): pin {} is gone; removed the record",
                            p.id, p.name, p.pin_path
                        ),
                    ),
                    Err(e) => warn!(id = p.id, "cannot drop record of vanished program: {e}"),
                }
            }
        }
        // Pins nobody recorded: left by a crash between pin and record.
        let known_progs: Vec<String> = self
            .store
            .programs()?
            .iter()
            .map(|p| p.pin_path.clone())
            .collect();
        let known_links: Vec<String> = self
            .store
            .links(None)?
            .iter()
            .map(|l| l.pin_path.clone())
            .collect();
        let known_maps: Vec<String> = self
            .store
            .programs()?
            .iter()
            .map(|p| p.map_pin_path.clone())
            .collect();
        let fs = &self.bpffs;
        for (dir, what, known) in [
            (fs.root().to_path_buf(), "program", &known_progs),
            (fs.links_root(), "link", &known_links),
            (fs.maps_root(), "map", &known_maps),
        ] {
            for (name, path) in self.listing(&dir, &mut report) {
                let s = path.display().to_string();
                if (what == "program" && !name.starts_with("prog_")) || known.contains(&s) {
                    continue;
                }
                let subject = RepairSubject::Pin(path.clone());
                match fs.remove(&path) {
                    Ok(()) => report
                        .repaired(subject, format!("{what} pin {s} had no record; removed it")),
                    Err(e) => report.failed(
                        subject,
                        format!("{what} pin {s} had no record; removing it failed: {e}"),
                    ),
                }
            }
        }
        self.reconcile_interfaces(&mut report)?;
        self.reconcile_dispatchers(&mut report, at_start)?;
        for a in &report.repairs {
            warn!("reconcile: {a}");
        }
        Ok(report)
    }

    /// Makes every dispatched hook run exactly the links the store records: a crash
    /// mid-rebuild can leave a newer revision swapped in but unrecorded, a half-built
    /// one, or a hook whose detach did not finish. Each is rebuilt from the store (the
    /// swap is atomic, so traffic never misses the programs that stay) or removed.
    ///
    /// A classic TC filter cannot be asked which program it runs (no bpf_link), so at
    /// start-up each classic TC hook that has links is rebuilt from the store: a crash
    /// between swapping a revision in and recording it would otherwise go unnoticed. The
    /// filter's program is replaced in place, so traffic does not notice.
    pub(super) fn reconcile_dispatchers(
        &self,
        report: &mut ReconcileReport,
        at_start: bool,
    ) -> Result<()> {
        let mut hooks: std::collections::BTreeSet<HookKey> = self
            .store
            .dispatchers()?
            .into_iter()
            .map(|d| d.hook)
            .collect();
        for (name, path) in self.listing(&self.bpffs.dispatchers_root(), report) {
            if name.starts_with("ext-target") {
                continue;
            }
            match HookKey::from_dir_name(&name) {
                Some(k) => {
                    hooks.insert(k);
                }
                None => match self.bpffs.remove(&path) {
                    Ok(()) => report.repaired(
                        RepairSubject::Pin(path),
                        format!("dispatcher directory {name} names no hook; removed it"),
                    ),
                    Err(e) => report.failed(
                        RepairSubject::Pin(path),
                        format!(
                            "dispatcher directory {name} names no hook; removing it failed: {e}"
                        ),
                    ),
                },
            }
        }
        // Hooks whose links run through a dispatcher (the kinds that use one here).
        for l in self.store.links(None)? {
            if let Some(h) = l.hook
                && self.dispatch_kind(&l.spec).is_some()
            {
                hooks.insert(h);
            }
        }
        for hook in hooks {
            let lock = self.lock(format!("hook/{hook}"));
            let _g = lock.lock().map_err(|_| Error::internal("lock poisoned"))?;
            self.reconcile_hook(&hook, report, at_start)?;
        }
        self.reconcile_extensions(report)
    }

    /// One dispatched hook (under its lock): take down what runs where nothing should,
    /// check what runs against the store, repair a vanished classic filter, drop stale
    /// revisions, or rebuild.
    fn reconcile_hook(
        &self,
        hook: &HookKey,
        report: &mut ReconcileReport,
        at_start: bool,
    ) -> Result<()> {
        let subject = || RepairSubject::Dispatcher(*hook);
        let rec = self.store.dispatcher(hook)?;
        let links = self.dispatched_links(hook, hook.kind)?;
        if links.is_empty() {
            return self.take_down_hook(hook, rec.as_ref(), report);
        }
        let Some(h) = links.iter().find_map(|l| l.spec.net_hook().cloned()) else {
            return Ok(());
        };
        let classic = rec
            .as_ref()
            .is_some_and(|r| matches!(r.attachment, HookAttachment::TcFilter(_)));
        let classic_at_start = at_start && classic;
        let consistent = !classic_at_start
            && rec
                .as_ref()
                .map(|r| self.hook_runs_records(hook, r, &links))
                .transpose()?
                .unwrap_or(false);
        if consistent && let Some(r) = &rec {
            if let HookAttachment::TcFilter(f) = r.attachment {
                self.restore_filter(hook, &h, r, f, &links, report)?;
            }
            // Drop revisions a crash left beside the recorded one.
            for (name, path) in self.listing(&self.bpffs.dispatcher_dir(hook), report) {
                if name.parse::<u32>().is_ok_and(|n| n != r.revision) {
                    match self.bpffs.remove(&path) {
                        Ok(()) => report.repaired(
                            subject(),
                            format!(
                                "dispatcher {hook}: revision {name} was left by an interrupted \
                             rebuild; removed it"
                            ),
                        ),
                        Err(e) => report.failed(
                            subject(),
                            format!(
                                "dispatcher {hook}: revision {name} was left by an interrupted \
                             rebuild; removing it failed: {e}"
                            ),
                        ),
                    }
                }
            }
            return Ok(());
        }
        match self.rebuild(hook, &h, links.clone(), hook.kind) {
            Ok(()) if classic_at_start => info!(
                hook = %hook,
                links = links.len(),
                "classic TC dispatcher rebuilt from the store at start-up"
            ),
            Ok(()) => report.repaired(
                subject(),
                format!(
                    "dispatcher {hook}: what ran did not match the {} recorded link(s); rebuilt it",
                    links.len()
                ),
            ),
            Err(e) => report.failed(
                subject(),
                format!("dispatcher {hook}: does not match the store and rebuilding failed: {e}"),
            ),
        }
        Ok(())
    }

    /// Nothing should run on `hook`: take down what a crash left.
    fn take_down_hook(
        &self,
        hook: &HookKey,
        rec: Option<&DispatcherRecord>,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let mut what = Vec::new();
        let mut ok = true;
        let hook_link = self.bpffs.hook_link(hook);
        let mut step = |r: Result<()>, done: &str, doing: &str| match r {
            Ok(()) => what.push(done.to_string()),
            Err(e) => {
                ok = false;
                what.push(format!("{doing} failed: {e}"))
            }
        };
        if let Some(r) = rec {
            match &r.attachment {
                HookAttachment::TcFilter(f) => match self.hook_of_key(hook) {
                    Some(h) => step(
                        self.kernel.remove_tc(&h, *f),
                        "removed its tc filter",
                        "removing its tc filter",
                    ),
                    None => step(
                        Err(Error::precondition(
                            "it is in another namespace; remove it by hand",
                        )),
                        "",
                        "removing its tc filter",
                    ),
                },
                HookAttachment::Link(p) => step(
                    self.kernel.detach(p).map(|_| ()),
                    "detached it",
                    "detaching it",
                ),
            }
            // Nothing is recorded on the hook: the record goes either way, and what could
            // not be taken down is said in the report.
            self.store.delete_dispatcher(hook)?;
        } else if self.bpffs.present(&hook_link).unwrap_or(false) {
            step(
                self.kernel.detach(&hook_link).map(|_| ()),
                "detached it",
                "detaching it",
            );
        }
        let dir = self.bpffs.dispatcher_dir(hook);
        if self.bpffs.present(&dir).unwrap_or(true) {
            match self.bpffs.remove(&dir) {
                Ok(()) => what.push("removed its pins".into()),
                Err(e) => {
                    ok = false;
                    what.push(format!("removing its pins failed: {e}"))
                }
            }
        }
        if !what.is_empty() {
            let text = format!(
                "dispatcher {hook}: no link is recorded on it; {}",
                what.join(", ")
            );
            if ok {
                report.repaired(RepairSubject::Dispatcher(*hook), text);
            } else {
                report.failed(RepairSubject::Dispatcher(*hook), text);
            }
        }
        Ok(())
    }

    /// Whether the hook runs what its record and links say: the recorded revision holds
    /// exactly the links' slots, and a bpf_link (XDP, or TC behind TCX) runs the
    /// recorded program. A classic TC filter is checked (and repaired) by the caller.
    pub(super) fn hook_runs_records(
        &self,
        hook: &HookKey,
        r: &DispatcherRecord,
        links: &[Link],
    ) -> Result<bool> {
        let lone = r.dispatcher_pin.is_none();
        let slots_ok = if lone {
            links.len() == 1
        } else {
            let (rev_dir, rev_pin) = self.bpffs.revision(hook, r.revision);
            let mut want: Vec<String> = links.iter().map(|l| format!("link_{}", l.id)).collect();
            // A listing that fails reads as "not as recorded": the hook is rebuilt.
            let mut have: Vec<String> = self
                .bpffs
                .entries(&rev_dir)
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| n.starts_with("link_"))
                .collect();
            want.sort();
            have.sort();
            want == have && self.bpffs.present(&rev_pin).unwrap_or(false)
        };
        let running_ok = match &r.attachment {
            HookAttachment::TcFilter(_) => true,
            HookAttachment::Link(p) => {
                let expect = if lone {
                    self.store
                        .program(links[0].program_id)?
                        .and_then(|p| self.kernel.pinned_info(Path::new(&p.pin_path)).ok())
                        .map(|k| k.id)
                } else {
                    r.program_id
                };
                expect.is_some() && self.kernel.link_program_id(p) == expect
            }
        };
        Ok(slots_ok && running_ok)
    }

    /// Classic TC: the filter (and its clsact qdisc) can be deleted by other tools
    /// (`tc qdisc del dev X clsact`). Putting the running program on it again is
    /// harmless when it is there; install_tc makes the filter again when it is not.
    fn restore_filter(
        &self,
        hook: &HookKey,
        h: &NetHook,
        r: &DispatcherRecord,
        f: TcFilter,
        links: &[Link],
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let prog = match &r.dispatcher_pin {
            None => self
                .store
                .program(links[0].program_id)?
                .map(|p| PathBuf::from(p.pin_path)),
            Some(p) => Some(p.clone()),
        };
        let Some(prog) = prog else { return Ok(()) };
        match self.kernel.install_tc(h, &prog, Some(f)) {
            Ok((_, false)) => {}
            Ok((nf, true)) => {
                let mut r2 = r.clone();
                r2.attachment = HookAttachment::TcFilter(nf);
                self.store.put_dispatcher(&r2)?;
                report.repaired(
                    RepairSubject::Dispatcher(*hook),
                    format!(
                        "dispatcher {hook}: its tc filter was gone (the clsact qdisc \
                     deleted outside bpfman?); put it back"
                    ),
                );
            }
            Err(e) => report.failed(
                RepairSubject::Dispatcher(*hook),
                format!(
                    "dispatcher {hook}: its tc filter is gone and putting it back \
                 failed: {e}"
                ),
            ),
        }
        Ok(())
    }

    /// A layout directory's entries; one that cannot be listed (no fd left, say) is
    /// reported and skipped, as if empty, so one failure does not stop the rest.
    fn listing(&self, dir: &Path, report: &mut ReconcileReport) -> Vec<(String, PathBuf)> {
        match self.bpffs.entries(dir) {
            Ok(v) => v,
            Err(e) => {
                report.kept(
                    RepairSubject::Pin(dir.to_path_buf()),
                    format!(
                        "{}: could not list it ({e}); checked next time",
                        dir.display()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Extensions whose link is gone.
    fn reconcile_extensions(&self, report: &mut ReconcileReport) -> Result<()> {
        let known: Vec<u32> = self.store.links(None)?.iter().map(|l| l.id).collect();
        for (name, path) in self.listing(&self.bpffs.ext_root(), report) {
            if name.parse::<u32>().is_ok_and(|id| !known.contains(&id)) {
                let subject = RepairSubject::Pin(path.clone());
                match self.bpffs.remove(&path) {
                    Ok(()) => report.repaired(
                        subject,
                        format!("extension pin ext/{name} had no link; removed it"),
                    ),
                    Err(e) => report.failed(
                        subject,
                        format!("extension pin ext/{name} had no link; removing it failed: {e}"),
                    ),
                }
            }
        }
        Ok(())
    }

    /// Links on interfaces or namespaces deleted (or replaced) behind the daemon's back:
    /// the kernel has already detached them; the records and pins go too.
    pub(super) fn reconcile_interfaces(&self, report: &mut ReconcileReport) -> Result<()> {
        for l in self.store.links(None)? {
            let Some(h) = l.spec.net_hook() else { continue };
            let gone =
                match self.kernel.check_interface(h) {
                    // Only the kernel's word that the device or namespace is gone counts;
                    // any other failure (EMFILE, EACCES, ...) keeps the link and is reported.
                    Err(e) if e.kind() == ErrorKind::NotFound => Some(e.to_string()),
                    Err(e) => {
                        report.kept(RepairSubject::Link(l.id), format!(
                        "link {} (program {}, {}): could not check its interface ({e}); kept",
                        l.id,
                        l.program_id,
                        l.spec.target()
                    ));
                        None
                    }
                    Ok(ifindex) if l.ifindex.is_some_and(|i| i != ifindex) => Some(format!(
                        "interface {} was deleted and created again (ifindex {} now, {} then)",
                        h.iface,
                        ifindex,
                        l.ifindex.unwrap_or(0)
                    )),
                    Ok(_) => None,
                };
            if let Some(why) = gone {
                let hook_lock = l.hook.as_ref().map(|k| self.lock(format!("hook/{k}")));
                let _g = match &hook_lock {
                    Some(lk) => Some(lk.lock().map_err(|_| Error::internal("lock poisoned"))?),
                    None => None,
                };
                let pin = Path::new(&l.pin_path);
                // A dispatched link's pin is its extension (or its program's own pin):
                // leave the program; drop only what belongs to the link.
                let mut removal = Ok(());
                if pin.starts_with(self.bpffs.links_root()) {
                    removal = self.kernel.detach(pin).map(|_| ());
                }
                let removal = removal.and_then(|()| self.bpffs.remove(&self.ext_pin(l.id)));
                if let Err(e) = removal {
                    // The record goes anyway (the kernel detached it); the pin is an
                    // orphan the next pass removes.
                    warn!(link = l.id, "{e}");
                }
                self.store.delete_link(l.id)?;
                report.repaired(
                    RepairSubject::Link(l.id),
                    format!(
                        "link {} (program {}, {}): {why}; the kernel detached it, record removed",
                        l.id,
                        l.program_id,
                        l.spec.target()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The interface a hook key names, when it is in the daemon's own namespace.
    pub(super) fn hook_of_key(&self, hook: &HookKey) -> Option<NetHook> {
        let own = netns_id(None).ok()?;
        if hook.netns != own {
            return None;
        }
        let idx = hook.ifindex;
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: buf is IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(idx, buf.as_mut_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
        let iface = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Some(NetHook {
            iface,
            direction: hook.direction,
            priority: 0,
            proceed_on: Vec::new(),
            netns: None,
        })
    }
}
