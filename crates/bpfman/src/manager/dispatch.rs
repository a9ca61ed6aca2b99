//! Shared hooks (XDP, TC): each change rebuilds the hook's dispatcher revision from the
//! store's links in the order `plan` computes, swaps it in atomically, and records it.

use super::*;

impl Manager {
    /// Attaches an XDP program through the hook's dispatcher (built on first use):
    /// the program is loaded as an extension of a dispatcher slot, and every attach
    /// rebuilds the dispatcher and swaps it in atomically.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_dispatched(
        &self,
        caller: Caller,
        p: &Program,
        spec: AttachSpec,
        h: &NetHook,
        hook: HookKey,
        ifindex: Option<u32>,
        on_hook: Vec<Link>,
        metadata: BTreeMap<String, String>,
        kind: HookKind,
    ) -> Result<Link> {
        let what = match kind {
            HookKind::Xdp => h.iface.clone(),
            HookKind::Tc => format!(
                "{} {}",
                h.iface,
                h.direction.map(|d| d.as_str()).unwrap_or("ingress")
            ),
        };
        if on_hook.len() >= crate::dispatcher::MAX_PROGRAMS {
            return Err(Error::precondition(format!(
                "{what} already runs {} {} programs, the most one dispatcher holds; \
                 detach one first",
                on_hook.len(),
                kind.as_str()
            )));
        }
        if !on_hook.is_empty() && !self.features.has(KernelFeature::Freplace) {
            return Err(Error::unsupported(format!(
                "{what} already has {} program {} attached (link {}); several programs on one \
                 hook need the dispatcher, which needs the kernel feature 'freplace' that this \
                 kernel lacks ({}); detach it first",
                kind.as_str(),
                on_hook[0].program_id,
                on_hook[0].id,
                self.features.detail(KernelFeature::Freplace)
            )));
        }
        if on_hook.iter().any(|l| l.program_id == p.id) {
            return Err(Error::exists(format!(
                "program {} is already attached to {what}",
                p.id
            )));
        }
        let mut link = intent(caller, p.id, spec, ifindex, Some(hook), metadata);
        let id = self.store.insert_link(&link)?;
        fault::point("attach.intent");
        link.id = id;
        let ext_pin = self.ext_pin(id);
        let mut all = on_hook;
        all.push(link.clone());
        if let Err(e) = self.rebuild(&hook, h, all, kind) {
            if let Err(r) = self.bpffs.remove(&ext_pin) {
                warn!("{r}");
            }
            let _ = self.store.delete_link(id);
            return Err(e);
        }
        fault::point("attach.pinned");
        // The link's pin: its extension, or (no freplace: a lone program runs directly
        // and never needs one) the program's own pin.
        let pin_s = if self.bpffs.present(&ext_pin).unwrap_or(false) {
            ext_pin.display().to_string()
        } else {
            p.pin_path.clone()
        };
        self.store.complete_link(id, &pin_s, 0)?;
        self.renumber(&hook)?;
        let l = self.link(id)?;
        info!(link = id, program = p.id, hook = %what, position = l.position, "attached through the dispatcher");
        Ok(l)
    }

    /// Whether links like `spec` share their hook through a dispatcher on this kernel,
    /// and which: XDP where freplace works; TC where freplace works (behind a TCX link
    /// where the kernel has TCX, else a classic clsact filter) and, with a lone program
    /// as the filter, where the kernel has neither. Elsewhere tc programs share the hook
    /// through TCX itself, like tcx programs.
    pub(super) fn dispatch_kind(&self, spec: &AttachSpec) -> Option<HookKind> {
        plan::dispatch_kind(
            spec,
            self.features.has(KernelFeature::Freplace),
            self.features.has(KernelFeature::Tcx),
        )
    }

    /// The links on `hook` that run through its dispatcher of `kind`.
    pub(super) fn dispatched_links(&self, hook: &HookKey, kind: HookKind) -> Result<Vec<Link>> {
        Ok(self
            .store
            .links_on_hook(hook)?
            .into_iter()
            .filter(|l| self.dispatch_kind(&l.spec) == Some(kind))
            .collect())
    }

    /// The configured XDP mode of an interface (`[interfaces.<if>] xdp_mode`).
    pub(super) fn xdp_mode(&self, iface: &str) -> Option<&str> {
        self.config
            .interfaces
            .get(iface)
            .and_then(|i| i.xdp_mode.as_deref())
    }

    pub(super) fn ext_pin(&self, link_id: u32) -> PathBuf {
        self.bpffs.ext(link_id)
    }

    /// Builds a new dispatcher revision running `links` in order, moves every program
    /// into it, and swaps it onto the interface. A lone program runs directly (no
    /// dispatcher, no overhead) through the same interface link. On failure the running
    /// revision stays untouched.
    pub(super) fn rebuild(
        &self,
        hook: &HookKey,
        h: &NetHook,
        links: Vec<Link>,
        kind: HookKind,
    ) -> Result<()> {
        let r = self.rebuild_inner(hook, h, links, kind);
        self.events
            .dispatcher_rebuilds
            .get_or_create(&crate::metrics::RebuildLabels {
                hook_type: match kind {
                    HookKind::Xdp => "xdp".into(),
                    HookKind::Tc => "tc".into(),
                },
                result: if r.is_ok() { "ok" } else { "error" }.into(),
            })
            .inc();
        r
    }

    fn rebuild_inner(
        &self,
        hook: &HookKey,
        h: &NetHook,
        links: Vec<Link>,
        kind: HookKind,
    ) -> Result<()> {
        let cur = self.store.dispatcher(hook)?;
        let slots = plan::slots(&links, kind)?;
        // Above the recorded revision and above any a crash left on bpffs.
        let on_disk: Vec<String> = self
            .bpffs
            .entries(&self.bpffs.dispatcher_dir(hook))?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let rev = plan::next_revision(cur.as_ref().map(|d| d.revision), &on_disk);
        let (dir, disp_pin) = self.bpffs.revision(hook, rev);
        let fresh = self.ready_extensions(&links, kind)?;
        let existing_filter = cur.as_ref().and_then(|d| match d.attachment {
            HookAttachment::TcFilter(f) => Some(f),
            HookAttachment::Link(_) => None,
        });
        let built = (|| -> Result<(Option<u32>, HookAttachment)> {
            if let [only] = slots.as_slice() {
                let l = links
                    .iter()
                    .find(|l| l.id == only.link_id)
                    .ok_or_else(|| Error::internal("slot without link"))?;
                let p = self.managed(l.program_id)?;
                fault::point("rebuild.built");
                let at =
                    self.install_on_hook(hook, h, kind, Path::new(&p.pin_path), existing_filter)?;
                return Ok((None, at));
            }
            let prog_id = self.build_revision(&slots, &links, kind, &dir, &disp_pin)?;
            fault::point("rebuild.built");
            let at = self.install_on_hook(hook, h, kind, &disp_pin, existing_filter)?;
            Ok((Some(prog_id), at))
        })();
        let (prog_id, attachment) = match built {
            Ok(v) => v,
            Err(e) => {
                // Best effort: what is left is found (and removed) by reconciliation.
                for f in fresh.iter().chain(std::iter::once(&dir)) {
                    if let Err(r) = self.bpffs.remove(f) {
                        warn!("{r}");
                    }
                }
                return Err(e.context(format!("building the {} dispatcher", kind.as_str())));
            }
        };
        fault::point("rebuild.swapped");
        self.store.put_dispatcher(&DispatcherRecord {
            hook: *hook,
            kind,
            revision: rev,
            // None: the lone program runs directly.
            dispatcher_pin: prog_id.map(|_| disp_pin.clone()),
            attachment,
            program_id: prog_id,
        })?;
        fault::point("rebuild.recorded");
        // Every older revision goes (normally one; more after a crash mid-rebuild).
        // The swap is done: a listing that fails leaves old revisions for reconciliation.
        let listed = self.bpffs.entries(&self.bpffs.dispatcher_dir(hook));
        if let Err(e) = &listed {
            warn!("dispatcher {hook}: old revisions stay: {e}");
        }
        for (name, path) in listed.unwrap_or_default() {
            if name.parse::<u32>().is_ok_and(|r| r != rev)
                && let Err(e) = self.bpffs.remove(&path)
            {
                // Left for the next reconciliation to remove; the swap is done.
                warn!("dispatcher {hook}: old revision {name} stays: {e}");
            }
        }
        info!(
            hook = %hook,
            revision = rev,
            programs = slots.len(),
            "dispatcher revision swapped in"
        );
        Ok(())
    }

    /// Every link keeps an extension ready (where freplace works), so it can move into
    /// a dispatcher later. Returns the extensions made now (removed again on failure).
    fn ready_extensions(&self, links: &[Link], kind: HookKind) -> Result<Vec<PathBuf>> {
        let mut fresh = Vec::new();
        if !self.features.has(KernelFeature::Freplace) {
            return Ok(fresh);
        }
        for l in links {
            let ext = self.ext_pin(l.id);
            if self.bpffs.present(&ext)? {
                continue;
            }
            let made = self
                .managed(l.program_id)
                .and_then(|p| self.load_as_extension(&p, &ext, kind));
            if let Err(e) = made {
                for f in &fresh {
                    if let Err(r) = self.bpffs.remove(f) {
                        warn!("{r}");
                    }
                }
                return Err(e);
            }
            fresh.push(ext);
        }
        Ok(fresh)
    }

    /// Loads a dispatcher revision for `slots` at `disp_pin` and attaches every link's
    /// extension into its slot; returns the dispatcher's program id.
    fn build_revision(
        &self,
        slots: &plan::Slots,
        links: &[Link],
        kind: HookKind,
        dir: &Path,
        disp_pin: &Path,
    ) -> Result<u32> {
        use crate::dispatcher::{slot_function, tc_config, xdp_config};
        // Multi-buffer packets only when every program on the hook supports them.
        let frags = kind == HookKind::Xdp
            && slots.iter().all(|s| {
                links
                    .iter()
                    .find(|l| l.id == s.link_id)
                    .and_then(|l| self.managed(l.program_id).ok())
                    .is_some_and(|p| self.supports_frags(&p))
            });
        let config = match kind {
            HookKind::Xdp => xdp_config(&slots.config, frags)?,
            HookKind::Tc => tc_config(&slots.config)?,
        };
        let prog_id = self.kernel.load_dispatcher(kind, config, disp_pin, frags)?;
        for (i, s) in slots.iter().enumerate() {
            self.kernel.attach_extension(
                &self.ext_pin(s.link_id),
                kind,
                disp_pin,
                &slot_function(i),
                &dir.join(format!("link_{}", s.link_id)),
            )?;
        }
        Ok(prog_id)
    }

    /// Puts `prog` on the hook itself. XDP: a pinned bpf_link updated in place; TC on a
    /// TCX kernel: a pinned TCX link updated in place; classic TC: a clsact filter whose
    /// program is replaced in place.
    fn install_on_hook(
        &self,
        hook: &HookKey,
        h: &NetHook,
        kind: HookKind,
        prog: &Path,
        existing_filter: Option<TcFilter>,
    ) -> Result<HookAttachment> {
        let hook_link = self.bpffs.hook_link(hook);
        match kind {
            HookKind::Xdp => {
                self.kernel
                    .install_xdp(h, prog, &hook_link, self.xdp_mode(&h.iface))?;
                Ok(HookAttachment::Link(hook_link))
            }
            HookKind::Tc if self.features.has(KernelFeature::Tcx) => {
                self.kernel.install_tc_link(h, prog, &hook_link)?;
                Ok(HookAttachment::Link(hook_link))
            }
            HookKind::Tc => {
                // A new classic filter: record where it will be first, so a crash right
                // after making it leaves a record that reconciliation can act on (a
                // filter holds no pin, so nothing else would find it).
                if existing_filter.is_none() {
                    self.store.put_dispatcher(&DispatcherRecord {
                        hook: *hook,
                        kind,
                        revision: 0,
                        dispatcher_pin: None,
                        attachment: HookAttachment::TcFilter(TcFilter::BPFMAN),
                        program_id: None,
                    })?;
                }
                let made = self.kernel.install_tc(h, prog, existing_filter);
                if made.is_err() && existing_filter.is_none() {
                    let _ = self.store.delete_dispatcher(hook);
                }
                Ok(HookAttachment::TcFilter(made?.0))
            }
        }
    }

    /// Whether an XDP program declares multi-buffer support (ELF section `xdp.frags`):
    /// recorded at load; read from the bytecode again only for records from before
    /// bpfman recorded it.
    pub(super) fn supports_frags(&self, p: &Program) -> bool {
        if let Some(v) = p.xdp_frags {
            return v;
        }
        self.bytecode_of(p)
            .ok()
            .and_then(|b| aya_obj::Object::parse(&b).ok())
            .and_then(|o| o.programs.get(&p.name).map(|x| x.section.clone()))
            .is_some_and(|s| matches!(s, aya_obj::ProgramSection::Xdp { frags: true, .. }))
    }

    /// A loaded program's bytecode again: its file, or its image from the cache (pulled
    /// again if it left the cache, with the daemon's own credentials).
    pub(super) fn bytecode_of(&self, p: &Program) -> Result<Vec<u8>> {
        match &p.bytecode {
            // As the program's owner, with the same limits as its load: the file may have
            // changed since (the caller of a rebuild checks the tag).
            Bytecode::File(f) => {
                let who = self.subject(p.owner);
                let bytes = access::read(
                    &identity(&who, p.owner),
                    Path::new(f),
                    &Confine::Anywhere,
                    self.file_limits(),
                )?;
                check_elf(&bytes, f)?;
                Ok(bytes)
            }
            Bytecode::Image { url, .. } => {
                let rec = self.pull_cached(
                    url,
                    PullPolicy::IfNotPresent,
                    &Credentials::default(),
                    &mut |_| {},
                )?;
                self.images.service()?.bytecode(&rec)
            }
        }
    }

    /// Loads program `p` again from its bytecode as an extension (against the shared
    /// extension target), with its globals and its maps, and checks it is the same code
    /// the kernel loaded before.
    pub(super) fn load_as_extension(&self, p: &Program, pin: &Path, kind: HookKind) -> Result<()> {
        let dispatcher = self.kernel.ext_target(kind)?;
        let bytes = self.bytecode_of(p)?;
        let owner = match p.map_owner_id {
            Some(o) => self.managed(o)?,
            None => p.clone(),
        };
        let plan = LoadPlan {
            programs: vec![crate::model::ProgramSpec {
                name: p.name.clone(),
                kind: p.kind,
                attach_fn: None,
            }],
            global_data: p.global_data.clone(),
            shared_maps: Some((PathBuf::from(&owner.map_pin_path), owner.maps.clone())),
        };
        self.kernel
            .load_extension(bytes, plan, kind, &dispatcher, Kernel::EXT_TARGET_SLOT, pin)?;
        let tag = self.kernel.pinned_info(pin)?.tag;
        if tag != p.tag {
            if let Err(e) = self.bpffs.remove(pin) {
                warn!("{e}");
            }
            return Err(Error::precondition(format!(
                "the bytecode of program {} changed since it was loaded (tag {} now, {} then); \
                 unload and load it again",
                p.id, tag, p.tag
            )));
        }
        Ok(())
    }

    /// Removes a link from its hook's dispatcher: a new revision without it, or no
    /// dispatcher at all when it was the last.
    pub(super) fn detach_dispatched(&self, l: &Link, hook: &HookKey) -> Result<()> {
        let h = l
            .spec
            .net_hook()
            .ok_or_else(|| Error::internal("dispatched link without a hook"))?;
        let kind = self
            .dispatch_kind(&l.spec)
            .ok_or_else(|| Error::internal("detaching a link that runs without a dispatcher"))?;
        let rest: Vec<Link> = self
            .dispatched_links(hook, kind)?
            .into_iter()
            .filter(|x| x.id != l.id)
            .collect();
        if rest.is_empty() {
            if let Some(d) = self.store.dispatcher(hook)? {
                match &d.attachment {
                    HookAttachment::TcFilter(f) => self.kernel.remove_tc(h, *f)?,
                    HookAttachment::Link(p) => {
                        self.kernel.detach(p)?;
                    }
                }
            }
            // The hook runs nothing now; pins left behind are removed by reconciliation.
            if let Err(e) = self.bpffs.remove(&self.bpffs.dispatcher_dir(hook)) {
                warn!("dispatcher {hook}: {e}");
            }
            self.store.delete_dispatcher(hook)?;
        } else {
            self.rebuild(hook, h, rest, kind)?;
        }
        fault::point("detach.unpinned");
        if let Err(e) = self.bpffs.remove(&self.ext_pin(l.id)) {
            warn!("link {}: {e}", l.id);
        }
        self.store.delete_link(l.id)?;
        self.renumber(hook)?;
        info!(
            link = l.id,
            program = l.program_id,
            "detached from the dispatcher"
        );
        Ok(())
    }

    /// The dispatcher revision a link runs in (0: attached directly).
    pub(super) fn dispatcher_revision(&self, l: &Link) -> u32 {
        if self.dispatch_kind(&l.spec).is_none() {
            return 0;
        }
        l.hook
            .as_ref()
            .and_then(|h| self.store.dispatcher(h).ok().flatten())
            .filter(|d| d.dispatcher_pin.is_some())
            .map(|d| d.revision)
            .unwrap_or(0)
    }

    /// Positions on an ordered hook follow (priority, link id); on a TC hook with a
    /// dispatcher behind TCX, the tcx programs come first and then the dispatcher's.
    pub(super) fn renumber(&self, hook: &HookKey) -> Result<()> {
        let links = self.store.links_on_hook(hook)?;
        for (id, position) in plan::positions(&links, |l| self.dispatch_kind(&l.spec).is_some()) {
            self.store.set_position(id, position)?;
        }
        Ok(())
    }
}
