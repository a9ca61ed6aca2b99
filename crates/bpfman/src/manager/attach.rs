//! Attaching and detaching: validate the spec against the program, open probe targets
//! as the caller, reserve quota, then attach directly or through a dispatcher.

use super::*;

/// The record of an attach before the kernel is touched: no id, no pin yet.
pub(super) fn intent(
    caller: Caller,
    program_id: u32,
    spec: AttachSpec,
    ifindex: Option<u32>,
    hook: Option<HookKey>,
    metadata: BTreeMap<String, String>,
) -> Link {
    Link {
        id: 0,
        program_id,
        spec,
        ifindex,
        kernel_link_id: 0,
        pin_path: String::new(),
        metadata,
        owner: caller,
        created_at: now_rfc3339(),
        position: 0,
        hook,
    }
}

impl Manager {
    /// Attaches a loaded program; returns the new link.
    pub fn attach(&self, caller: Caller, program_id: u32, spec: AttachSpec) -> Result<Link> {
        self.attach_with_metadata(caller, program_id, spec, BTreeMap::new())
    }

    /// Attaches a loaded program, recording `metadata` on the link.
    pub fn attach_with_metadata(
        &self,
        caller: Caller,
        program_id: u32,
        mut spec: AttachSpec,
        metadata: BTreeMap<String, String>,
    ) -> Result<Link> {
        // Default proceed-on, as upstream: XDP pass; TC ok and pipe; both dispatcher_return.
        match &mut spec {
            AttachSpec::Xdp(h) if h.proceed_on.is_empty() => h.proceed_on = vec![2, 31],
            AttachSpec::Tc(h) if h.proceed_on.is_empty() => h.proceed_on = vec![0, 3, 30],
            _ => {}
        }
        let who = self.precheck(caller, Action::Attach, "attach")?;
        let p = self.managed(program_id)?;
        self.validate_attach(&p, &spec)?;
        check_metadata(&metadata, "the attach")?;
        // A process the probe is scoped to or resolved in: held by a pidfd from here on.
        let process = match &spec {
            AttachSpec::Uprobe {
                pid, container_pid, ..
            } => container_pid.or(*pid).map(ProcessRef::open).transpose()?,
            _ => None,
        };
        let foreign_process = match &process {
            Some(pr) if caller.uid != 0 && !pr.belongs_to(caller.uid)? => Some(pr.pid),
            _ => None,
        };
        let ((_, owned_links), mut reservation) = self.reserve(caller.uid, 0, 1)?;
        let what = format!(
            "attach program {program_id} {} {}",
            spec.name(),
            truncate(&spec.target(), 256)
        );
        let (decision, ticket) = self.decide(
            caller,
            &who,
            &Request::Attach {
                kind: p.kind,
                spec: &spec,
                owned_links,
                own_program: p.owner.uid == caller.uid,
                foreign_process,
                // A tenant is root acting for a namespace: the agent writes its own keys.
                reserved_metadata: if crate::model::is_tenant_uid(caller.uid) {
                    Vec::new()
                } else {
                    reserved_keys(&metadata)
                },
            },
            &what,
        )?;
        let r = self.attach_allowed(
            caller,
            &who,
            &decision,
            p,
            spec,
            metadata,
            process,
            &mut reservation,
        );
        drop(reservation);
        ticket.finish(&r);
        r
    }

    /// Checks an attach request on its own (no state, no kernel): the program kind fits,
    /// the hook's values are in range, names and paths are well formed.
    pub(super) fn validate_attach(&self, p: &Program, spec: &AttachSpec) -> Result<()> {
        let program_id = p.id;
        if !p.kind.accepts(spec) {
            return Err(Error::invalid(format!(
                "program {program_id} ('{}') is a {} program; it cannot be attached as {}",
                p.name,
                p.kind,
                spec.name()
            )));
        }
        match &spec {
            AttachSpec::Xdp(h) => validate_hook("xdp", h, Some(ProceedOn::Xdp))?,
            AttachSpec::Tc(h) => validate_hook("tc", h, Some(ProceedOn::Tc))?,
            AttachSpec::Tcx(h) => validate_hook("tcx", h, None)?,
            AttachSpec::Tracepoint { tracepoint } => check_tracepoint(tracepoint)?,
            AttachSpec::Kprobe {
                fn_name,
                container_pid,
                ..
            } => {
                if fn_name.is_empty() {
                    return Err(Error::invalid("kprobe attach needs --fn-name"));
                }
                check_name(fn_name, "a kernel function name")?;
                if container_pid.is_some() {
                    return Err(Error::invalid(
                        "kprobes are kernel-wide; --container-pid does not apply to them",
                    ));
                }
            }
            AttachSpec::Uprobe {
                target,
                fn_name,
                offset,
                ..
            } => {
                if target.is_empty() {
                    return Err(Error::invalid(
                        "uprobe attach needs --target PATH_OR_LIBRARY",
                    ));
                }
                if fn_name.as_deref().unwrap_or("").is_empty() && *offset == 0 {
                    return Err(Error::invalid("uprobe attach needs --fn-name or --offset"));
                }
                if let Some(f) = fn_name {
                    check_name(f, "a symbol name")?;
                }
                // A bare library name is resolved through ld.so.cache (root only: see
                // attach_allowed); anything else is a checked absolute path.
                if target.contains('/') {
                    access::check_path(target, "uprobe target")?;
                } else {
                    check_name(target, "a uprobe target")?;
                }
            }
            AttachSpec::Fentry | AttachSpec::Fexit | AttachSpec::Lsm => {}
        }
        if let Some(h) = spec.net_hook() {
            if h.iface.len() >= libc::IF_NAMESIZE || h.iface.contains('/') {
                return Err(Error::invalid(format!(
                    "'{}' is not an interface name (at most {} bytes, no '/')",
                    truncate(&h.iface, 64),
                    libc::IF_NAMESIZE - 1
                )));
            }
            if let Some(ns) = &h.netns {
                access::check_path(ns, "netns path")?;
            }
        }
        Ok(())
    }

    /// Opens what a uprobe names as the caller and confined to the grant, and returns
    /// the spec the kernel attaches (the opened file at `/proc/self/fd/N` and the
    /// symbol resolved in it, so what was checked is what is probed) with the file.
    pub(super) fn open_uprobe_target(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        spec: &AttachSpec,
        process: Option<&ProcessRef>,
    ) -> Result<Option<(AttachSpec, access::Opened, String)>> {
        let AttachSpec::Uprobe {
            fn_name,
            offset,
            target,
            pid,
            container_pid,
        } = spec
        else {
            return Ok(None);
        };
        if !target.contains('/') {
            if caller.uid != 0 {
                return Err(Error::invalid(format!(
                    "uprobe target '{target}' is a library name; give the absolute path of \
                     the binary or library (e.g. /usr/lib/x86_64-linux-gnu/libc.so.6): names \
                     resolved through ld.so.cache are for root only"
                )));
            }
            if container_pid.is_some() {
                return Err(Error::invalid(
                    "with --container-pid, give the target's absolute path inside the container",
                ));
            }
            return Ok(None);
        }
        let path = Path::new(target);
        let granted =
            match decision
                .grant
                .as_ref()
                .and_then(|g| g.uprobe_targets.as_ref())
            {
                Some(t) => Some(crate::policy::uprobe_dir(t, target).ok_or_else(|| {
                    Error::denied(format!("uprobe target {target} is not granted"))
                })?),
                None => None,
            };
        let confine = match (container_pid, process) {
            (Some(_), Some(pr)) => {
                if caller.uid != 0 && !pr.mounts_owned_by_init_userns()? {
                    return Err(Error::denied(format!(
                        "process {}'s mount namespace belongs to a user namespace (a rootless \
                         or user-namespaced container), where unprivileged users arrange the \
                         files; only root may probe through it",
                        pr.pid
                    )));
                }
                let root = PathBuf::from(format!("/proc/{}/root", pr.pid));
                match granted {
                    Some(dir) => Confine::BeneathInRoot { root, dir },
                    None => Confine::InRoot(root),
                }
            }
            _ => match granted {
                Some(dir) => Confine::Beneath(dir),
                None => Confine::Anywhere,
            },
        };
        let limits = Limits {
            max_bytes: u64::MAX,
            deadline: Duration::from_secs(self.config.daemon.file_open_timeout_secs),
        };
        let opened = access::open(&identity(who, caller), path, &confine, limits)
            .map_err(|e| e.context("uprobe target"))?;
        let resolved = match fn_name.as_deref().filter(|f| !f.is_empty()) {
            Some(sym) => crate::kernel::uprobe_symbol_offset(&opened.file, sym)
                .map_err(|e| e.context(format!("uprobe target {target}")))?
                .checked_add(*offset)
                .ok_or_else(|| Error::invalid("uprobe offset overflows"))?,
            None => *offset,
        };
        let probed = format!(
            "{} ({}){}",
            target,
            opened.identity(),
            match container_pid {
                Some(c) => format!(" in the mount namespace of pid {c}"),
                None => String::new(),
            }
        );
        let kernel_spec = AttachSpec::Uprobe {
            fn_name: None,
            offset: resolved,
            target: opened.fd_path().display().to_string(),
            pid: *pid,
            container_pid: None,
        };
        Ok(Some((kernel_spec, opened, probed)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_allowed(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        p: Program,
        spec: AttachSpec,
        mut metadata: BTreeMap<String, String>,
        process: Option<ProcessRef>,
        reservation: &mut super::authz::Reserved<'_>,
    ) -> Result<Link> {
        let program_id = p.id;
        // Files first, with no lock held: a slow file holds only this request.
        let uprobe = self.open_uprobe_target(caller, who, decision, &spec, process.as_ref())?;
        if let Some((_, _, probed)) = &uprobe {
            metadata.insert(bpfman_types::metadata::PROBED.into(), probed.clone());
        }
        let _gate = self.gate_shared()?;
        let plock = self.lock(format!("prog/{program_id}"));
        let _pg = plock.lock().map_err(|_| Error::internal("lock poisoned"))?;
        crate::request::check()?;
        let p2 = self.managed(program_id)?;
        if p2.owner != p.owner {
            return Err(Error::precondition(format!(
                "program {program_id} changed while the request was decided; try again"
            )));
        }
        let kernel_spec = uprobe.as_ref().map(|(k, _, _)| k.clone());
        let link = self.attach_locked(caller, &p2, spec, kernel_spec, metadata, reservation)?;
        // The probed process must still be the one checked (not a reused pid).
        if let Some(pr) = &process
            && let Err(e) = pr.alive()
        {
            let _ = self.detach_locked(&link);
            return Err(e);
        }
        Ok(link)
    }

    /// Checks a direct (not dispatched) network attach against what the hook runs, and
    /// where it goes: XDP takes one program; TC and TCX order by priority.
    fn direct_order(
        &self,
        spec: &AttachSpec,
        hook: Option<&HookKey>,
        on_hook: &[Link],
        program_id: u32,
    ) -> Result<(i32, Option<TcxAnchor>)> {
        match spec {
            AttachSpec::Xdp(h) => {
                if let Some(l) = on_hook.first() {
                    return Err(Error::exists(format!(
                        "interface {} already has XDP program {} attached (link {}); several XDP \
                         programs on one interface need the XDP dispatcher, which needs the \
                         kernel feature 'freplace' that this kernel lacks ({}); detach it first",
                        h.iface,
                        l.program_id,
                        l.id,
                        self.features.detail(KernelFeature::Freplace)
                    )));
                }
            }
            AttachSpec::Tc(h) | AttachSpec::Tcx(h) => {
                if on_hook.iter().any(|l| l.program_id == program_id) {
                    return Err(Error::exists(format!(
                        "program {program_id} is already attached to {} {}",
                        h.iface,
                        h.direction.map(|d| d.as_str()).unwrap_or("ingress")
                    )));
                }
                let direct: Vec<&Link> = on_hook
                    .iter()
                    .filter(|l| self.dispatch_kind(&l.spec).is_none())
                    .collect();
                let dispatcher_link = match hook {
                    Some(k) => self.store.dispatcher(k)?.and_then(|d| match d.attachment {
                        HookAttachment::Link(p) => self.kernel.link_id(&p),
                        HookAttachment::TcFilter(_) => None,
                    }),
                    None => None,
                };
                let order = plan::tcx_order(&direct, h.priority, dispatcher_link);
                return Ok((order.position, order.anchor));
            }
            _ => {}
        }
        Ok((0, None))
    }

    pub(super) fn attach_locked(
        &self,
        caller: Caller,
        p: &Program,
        spec: AttachSpec,
        kernel_spec: Option<AttachSpec>,
        metadata: BTreeMap<String, String>,
        reservation: &mut super::authz::Reserved<'_>,
    ) -> Result<Link> {
        let program_id = p.id;
        match &spec {
            AttachSpec::Tcx(_) => self.require(KernelFeature::Tcx, "attaching tcx programs")?,
            AttachSpec::Kprobe { .. } => {
                self.require(KernelFeature::Kprobe, "attaching kprobes")?
            }
            _ => {}
        }

        // Network hooks: resolve the interface and lock the hook.
        let (hook, ifindex) = match spec.net_hook() {
            Some(h) => {
                let ifindex = self.kernel.check_interface(h)?;
                let ns = netns_id(h.netns.as_deref())?;
                (HookKey::of(&spec, Some(ifindex), ns), Some(ifindex))
            }
            None => (None, None),
        };
        let hlock = hook.as_ref().map(|k| self.lock(format!("hook/{k}")));
        let _hg = match &hlock {
            Some(l) => Some(l.lock().map_err(|_| Error::internal("lock poisoned"))?),
            None => None,
        };
        let on_hook = match &hook {
            Some(k) => self.store.links_on_hook(k)?,
            None => Vec::new(),
        };
        if let (Some(h), Some(kind)) = (spec.net_hook(), self.dispatch_kind(&spec)) {
            let hook = hook.ok_or_else(|| Error::internal("network attach without a hook key"))?;
            let on_hook = on_hook
                .into_iter()
                .filter(|l| self.dispatch_kind(&l.spec) == Some(kind))
                .collect();
            return self.attach_dispatched(
                caller,
                p,
                spec.clone(),
                h,
                hook,
                ifindex,
                on_hook,
                metadata,
                kind,
            );
        }
        let (position, tcx_anchor) =
            self.direct_order(&spec, hook.as_ref(), &on_hook, program_id)?;

        // Record intent, then touch the kernel, then record the result.
        let mut link = Link {
            position,
            ..intent(caller, program_id, spec.clone(), ifindex, hook, metadata)
        };
        let id = reservation.commit(|| self.store.insert_link(&link))?;
        fault::point("attach.intent");
        let pin = self.bpffs.link(id);
        let xdp_mode = spec.net_hook().and_then(|h| self.xdp_mode(&h.iface));
        let attached = match self.kernel.attach(
            p.kind,
            Path::new(&p.pin_path),
            kernel_spec.as_ref().unwrap_or(&spec),
            &pin,
            tcx_anchor,
            xdp_mode,
        ) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.store.delete_link(id);
                return Err(e);
            }
        };
        fault::point("attach.pinned");
        let pin_s = pin.display().to_string();
        if let Err(e) = self
            .store
            .complete_link(id, &pin_s, attached.kernel_link_id)
        {
            let _ = self.kernel.detach(&pin);
            let _ = self.store.delete_link(id);
            return Err(e);
        }
        link.id = id;
        link.pin_path = pin_s;
        link.kernel_link_id = attached.kernel_link_id;
        info!(link = id, program = program_id, target = %spec.target(), kind = spec.name(), "attached");
        if let Some(k) = &hook {
            self.renumber(k)?;
            if let Some(l) = self.store.link(id)? {
                link.position = l.position;
            }
        }
        Ok(link)
    }

    /// Detaches a link.
    pub fn detach(&self, caller: Caller, link_id: u32) -> Result<()> {
        let what = format!("detach link {link_id}");
        let who = self.precheck(caller, Action::Detach, &what)?;
        let l = self.link(link_id)?;
        let (_, ticket) = self
            .decide(
                caller,
                &who,
                &Request::Detach {
                    own: l.owner.uid == caller.uid,
                },
                &what,
            )
            .map_err(|e| e.context(format!("link {link_id}")))?;
        let r = (|| {
            let _gate = self.gate_shared()?;
            let plock = self.lock(format!("prog/{}", l.program_id));
            let _pg = plock.lock().map_err(|_| Error::internal("lock poisoned"))?;
            crate::request::check()?;
            // Re-read under the lock: another call may have removed it meanwhile.
            let now = self.link(link_id)?;
            if now.owner != l.owner {
                return Err(Error::precondition(format!(
                    "link {link_id} changed while the request was decided; try again"
                )));
            }
            self.detach_locked(&now)
        })();
        // Done when it returns: the kernel link id is gone (waited for with no lock held).
        let r = r.map(|gone| {
            if let Some(k) = gone {
                self.kernel.wait_gone(crate::kernel::ids::Object::Link, k);
            }
        });
        ticket.finish(&r);
        r
    }

    /// Detaches under the locks; returns the kernel link id to wait for, if any.
    pub(super) fn detach_locked(&self, l: &Link) -> Result<Option<u32>> {
        // The key recorded at attach: the namespace may be gone by now.
        let hook = l.hook;
        let hlock = hook.as_ref().map(|k| self.lock(format!("hook/{k}")));
        let _hg = match &hlock {
            Some(lk) => Some(lk.lock().map_err(|_| Error::internal("lock poisoned"))?),
            None => None,
        };
        if let Some(k) = &hook
            && self.dispatch_kind(&l.spec).is_some()
            && self.store.dispatcher(k)?.is_some()
        {
            return self.detach_dispatched(l, k).map(|()| None);
        }
        let gone = self.kernel.detach(Path::new(&l.pin_path))?;
        fault::point("detach.unpinned");
        self.store.delete_link(l.id)?;
        if let Some(k) = &hook {
            self.renumber(k)?;
        }
        info!(link = l.id, program = l.program_id, "detached");
        Ok(gone)
    }
}
