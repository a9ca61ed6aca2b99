//! Loading and unloading programs: authorize, read bytecode (budgeted, as the caller),
//! load every program of the object or none, record, and unload in the right order
//! (map users before their owner), waiting until the kernel has let go.

use super::*;

impl Manager {
    // Long on purpose: every check of a load request before any state is read (names,
    // metadata, globals, the policy decision, quota reserved with its check).
    /// Loads programs from one object. Nothing is attached.
    pub fn load(&self, caller: Caller, req: LoadRequest) -> Result<Vec<Program>> {
        let r = self.load_inner(caller, req);
        if let Err(e) = &r
            && !matches!(e.kind(), crate::ErrorKind::Cancelled)
        {
            self.events.load_failed(e);
        }
        r
    }

    fn load_inner(&self, caller: Caller, req: LoadRequest) -> Result<Vec<Program>> {
        let who = self.precheck(caller, Action::Load, "load")?;
        let bytecode = req
            .bytecode
            .clone()
            .ok_or_else(|| Error::invalid("load needs bytecode: a file path or an image"))?;
        // Policy judges images by their normalised reference, and files by a path with
        // no '.' or '..' in it.
        let bytecode = match bytecode {
            Bytecode::Image {
                url,
                pull_policy,
                digest,
            } => Bytecode::Image {
                url: ImageService::normalise(&url)?.1,
                pull_policy,
                digest,
            },
            Bytecode::File(f) => {
                access::check_path(&f, "bytecode path")?;
                Bytecode::File(f)
            }
        };
        if req.programs.is_empty() {
            return Err(Error::invalid(
                "load names no programs: give --programs TYPE:FUNCTION at least once",
            ));
        }
        let mut seen = HashSet::with_capacity(req.programs.len());
        for p in &req.programs {
            if p.name.is_empty() {
                return Err(Error::invalid("a program's function name is empty"));
            }
            check_name(&p.name, "a function name")?;
            if !seen.insert(p.name.as_str()) {
                return Err(Error::invalid(format!(
                    "function '{}' is named twice",
                    p.name
                )));
            }
            if let Some(f) = &p.attach_fn {
                check_name(f, "a kernel function name")?;
            }
            if p.kind.needs_attach_fn() && p.attach_fn.as_deref().unwrap_or("").is_empty() {
                let (what, arg) = p.kind.attach_fn_words();
                return Err(Error::invalid(format!(
                    "{} program '{}' needs its {what}: --programs {}:{}:{arg}",
                    p.kind, p.name, p.kind, p.name
                )));
            }
        }
        if req.global_data.len() > MAX_GLOBALS {
            return Err(Error::invalid(format!(
                "{} globals given; at most {MAX_GLOBALS}",
                req.global_data.len()
            )));
        }
        let mut global_bytes = 0;
        for (k, v) in &req.global_data {
            if k.is_empty() || v.is_empty() {
                return Err(Error::invalid(format!(
                    "global '{}' needs a name and at least one byte (NAME=HEX)",
                    truncate(k, 64)
                )));
            }
            check_name(k, "a global's name")?;
            global_bytes += v.len();
        }
        if global_bytes > MAX_GLOBAL_BYTES {
            return Err(Error::invalid(format!(
                "global data is {global_bytes} bytes; at most {MAX_GLOBAL_BYTES}"
            )));
        }
        check_metadata(&req.metadata, "the load")?;
        let n = req.programs.len() as u32;
        let ((owned, _), mut reservation) = self.reserve(caller.uid, n, 0)?;
        // Sharing maps reads and writes the owner's maps: the caller must own it (and
        // the program whose maps it uses in turn).
        let foreign_map_owner = match req.map_owner_id {
            Some(id) if caller.uid != 0 => {
                let p = self.managed(id)?;
                let root = match p.map_owner_id {
                    Some(r) => self.managed(r)?,
                    None => p.clone(),
                };
                (p.owner.uid != caller.uid || root.owner.uid != caller.uid).then_some(id)
            }
            _ => None,
        };
        let kinds: Vec<ProgramKind> = req.programs.iter().map(|p| p.kind).collect();
        let attach_fns: Vec<(ProgramKind, &str)> = req
            .programs
            .iter()
            .filter_map(|p| p.attach_fn.as_deref().map(|f| (p.kind, f)))
            .collect();
        let names: Vec<String> = req
            .programs
            .iter()
            .take(16)
            .map(|p| format!("{}:{}", p.kind, p.name))
            .collect();
        let what = format!(
            "load {}{} from {bytecode:?}",
            names.join(" "),
            if req.programs.len() > 16 {
                format!(" (and {} more)", req.programs.len() - 16)
            } else {
                String::new()
            }
        );
        let (decision, ticket) = self.decide(
            caller,
            &who,
            &Request::Load {
                bytecode: &bytecode,
                kinds,
                attach_fns,
                owned_programs: owned,
                new_programs: n,
                foreign_map_owner,
                // A tenant is root acting for a namespace: the agent writes its own keys.
                reserved_metadata: if crate::model::is_tenant_uid(caller.uid) {
                    Vec::new()
                } else {
                    reserved_keys(&req.metadata)
                },
            },
            &what,
        )?;
        let r = self.load_allowed(caller, &who, &decision, &req, bytecode, &mut reservation);
        drop(reservation);
        ticket.finish(&r);
        r
    }

    /// The bytecode of a load, read as the caller (a file, within the rule's directories
    /// and the in-flight budget) or from the image cache (pulled under the caller's pull
    /// slots, signature policy applied), and where it came from as recorded.
    fn bytecode_for_load(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        req: &LoadRequest,
        bytecode: &Bytecode,
    ) -> Result<(access::Bytes, Bytecode)> {
        Ok(match bytecode {
            Bytecode::File(f) => {
                let path = Path::new(f);
                let confine = file_confine(decision.grant.as_ref(), path)?;
                let bytes = access::read_budgeted(
                    &identity(who, caller),
                    path,
                    &confine,
                    self.file_limits(),
                    &self.bytecode_budget,
                )
                .map_err(|e| e.context("bytecode file"))?;
                check_elf(&bytes, f)?;
                (bytes, bytecode.clone())
            }
            Bytecode::Image {
                url, pull_policy, ..
            } => {
                let creds = Credentials {
                    username: req.registry_auth.as_ref().map(|a| a.0.clone()),
                    password: req.registry_auth.as_ref().map(|a| a.1.clone()),
                };
                let rec = self.pull_counted(
                    caller,
                    url,
                    PullPolicy::from_i32(*pull_policy)?,
                    &creds,
                    &mut |_| {},
                )?;
                require_signed(decision, &rec)?;
                for p in &req.programs {
                    if !rec.labels.programs.is_empty() && !rec.labels.programs.contains_key(&p.name)
                    {
                        return Err(Error::invalid(format!(
                            "image {} has no program '{}' (it has: {})",
                            rec.reference,
                            p.name,
                            rec.labels
                                .programs
                                .iter()
                                .map(|(f, t)| format!("{t}:{f}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
                let bytes = self.images.service()?.bytecode(&rec)?;
                let held = self.bytecode_budget.take(
                    bytes.len() as u64,
                    &format!("the bytecode of {}", rec.reference),
                )?;
                (
                    access::Bytes::new(bytes, held),
                    Bytecode::Image {
                        url: rec.reference.clone(),
                        pull_policy: *pull_policy,
                        digest: Some(rec.digest.clone()),
                    },
                )
            }
        })
    }

    /// The program whose maps a load shares: the one asked for, or its own map owner;
    /// another user's only with `manage_others`.
    fn map_owner(&self, caller: Caller, decision: &Decision, id: u32) -> Result<Program> {
        // Map sharing: use the maps of the owner (or of the owner's own owner).
        let p = self.store.program(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "map owner program {id} is not loaded by bpfman (see `bpfman list programs`)"
            ))
        })?;
        let root = match p.map_owner_id {
            Some(root) => self
                .store
                .program(root)?
                .ok_or_else(|| Error::internal(format!("map owner {root} of {id} is missing")))?,
            None => p,
        };
        // Checked again now that nothing can change under us (the owner's map
        // directory is locked until this load's rows are in: an unload of the
        // owner checks for users under the same lock).
        if caller.uid != 0
            && root.owner.uid != caller.uid
            && !decision.grant.as_ref().is_some_and(|g| g.manage_others)
        {
            return Err(Error::denied(format!(
                "map owner program {} belongs to another user",
                root.id
            )));
        }
        Ok(root)
    }

    pub(super) fn load_allowed(
        &self,
        caller: Caller,
        who: &Subject,
        decision: &Decision,
        req: &LoadRequest,
        bytecode: Bytecode,
        reservation: &mut super::authz::Reserved<'_>,
    ) -> Result<Vec<Program>> {
        // What this kernel cannot load is said once the caller is allowed to ask.
        for p in &req.programs {
            if let Some(feature) = p.kind.feature() {
                self.require(feature, &format!("loading {} program '{}'", p.kind, p.name))?;
            }
        }
        let (bytes, bytecode) = self.bytecode_for_load(caller, who, decision, req, &bytecode)?;
        // Parse the object ourselves first: a malformed one gets a clear error here
        // rather than reaching the kernel loader.
        let elf = crate::image::format::inspect_elf(&bytes, "the bytecode")?;
        let _gate = self.gate_shared()?;

        let owner = match req.map_owner_id {
            None => None,
            Some(id) => Some(self.map_owner(caller, decision, id)?),
        };
        let maps_lock = owner
            .as_ref()
            .map(|o| self.lock(format!("maps/{}", o.map_pin_path)));
        let _maps_guard = match &maps_lock {
            Some(l) => Some(l.lock().map_err(|_| Error::internal("lock poisoned"))?),
            None => None,
        };
        let shared_dir = owner.as_ref().map(|o| PathBuf::from(&o.map_pin_path));
        let plan = LoadPlan {
            programs: req.programs.clone(),
            global_data: req.global_data.clone(),
            shared_maps: owner
                .as_ref()
                .zip(shared_dir)
                .map(|(o, d)| (d, o.maps.clone())),
        };
        let loaded = self.kernel.load(Box::new(bytes), plan)?;
        fault::point("load.pinned");

        let created_at = now_rfc3339();
        let programs: Vec<Program> = req
            .programs
            .iter()
            .zip(&loaded.programs)
            .map(|(spec, k)| Program {
                id: k.id,
                name: spec.name.clone(),
                kind: k.kind,
                bytecode: bytecode.clone(),
                attach_fn: spec.attach_fn.clone(),
                global_data: req.global_data.clone(),
                metadata: req.metadata.clone(),
                // Reported only when the caller asked for it; programs loaded together
                // are peers that share their maps (as upstream).
                map_owner_id: owner.as_ref().map(|o| o.id),
                map_pin_path: loaded.map_dir.display().to_string(),
                maps: loaded.maps.clone(),
                pin_path: k.pin_path.display().to_string(),
                owner: caller,
                created_at: created_at.clone(),
                tag: k.tag.clone(),
                xdp_frags: Some(elf.xdp_frags.contains(&spec.name)),
            })
            .collect();
        if let Err(e) = reservation.commit(|| self.store.insert_programs(&programs)) {
            for p in &loaded.programs {
                let _ = self.kernel.unpin_program(&p.pin_path);
            }
            if owner.is_none() {
                self.kernel.remove_maps(&loaded.map_dir);
            }
            return Err(e);
        }
        for p in &programs {
            info!(id = p.id, name = %p.name, kind = %p.kind, uid = caller.uid, "loaded");
        }
        Ok(programs)
    }

    /// Unloads a program: detaches its links, then removes it (and its maps, when it
    /// owns them). A program whose maps others use is refused until they are unloaded.
    pub fn unload(&self, caller: Caller, id: u32) -> Result<()> {
        let what = format!("unload program {id}");
        let who = self.precheck(caller, Action::Unload, &what)?;
        let p = self.managed(id)?;
        let (_, ticket) = self
            .decide(
                caller,
                &who,
                &Request::Unload {
                    own: p.owner.uid == caller.uid,
                },
                &what,
            )
            .map_err(|e| e.context(format!("program {id}")))?;
        let r = self.unload_allowed(id, p.owner);
        // Done when it returns: the links' and the program's ids are gone. Waited for
        // with no lock or gate held, so one slow teardown holds only its own caller.
        let r = r.map(|links| {
            for l in links {
                self.kernel.wait_gone(crate::kernel::ids::Object::Link, l);
            }
            if !self
                .kernel
                .wait_gone(crate::kernel::ids::Object::Program, id)
            {
                warn!(
                    id,
                    uid = p.owner.uid,
                    "program outlived its Unload: something else holds it (a bpf_timer in \
                     its maps, a process's fd); it counts against its owner's max_programs \
                     until the kernel lets it go"
                );
                let mut m = match self.lingering.lock() {
                    Ok(m) => m,
                    Err(e) => e.into_inner(),
                };
                m.entry(p.owner.uid).or_default().push(id);
            }
        });
        ticket.finish(&r);
        r
    }

    /// Unloads under the locks; returns the kernel link ids to wait for.
    pub(super) fn unload_allowed(&self, id: u32, decided_owner: Caller) -> Result<Vec<u32>> {
        let _gate = self.gate_shared()?;
        let lock = self.lock(format!("prog/{id}"));
        let _g = lock.lock().map_err(|_| Error::internal("lock poisoned"))?;
        crate::request::check()?;
        let p = self.managed(id)?;
        if p.owner != decided_owner {
            return Err(Error::precondition(format!(
                "program {id} changed while the request was decided; try again"
            )));
        }
        // The map directory is locked from the users check to the removal: a load that
        // names this program as its map owner waits, or is refused once it is gone.
        let maps = self.lock(format!("maps/{}", p.map_pin_path));
        let _m = maps.lock().map_err(|_| Error::internal("lock poisoned"))?;
        let users = self.store.map_users(id)?;
        if !users.is_empty() {
            let list: Vec<String> = users.iter().map(|u| u.to_string()).collect();
            return Err(Error::precondition(format!(
                "program {id} owns maps that programs {} use; unload those first",
                list.join(", ")
            )));
        }
        let mut gone = Vec::new();
        for l in self.store.links(Some(id))? {
            gone.extend(self.detach_locked(&l)?);
        }
        self.kernel.unpin_program(Path::new(&p.pin_path))?;
        fault::point("unload.unpinned");
        // The maps go with the last program that uses them (peers loaded together share
        // one directory); a crash before this leaves a directory no record names, which
        // reconciliation removes.
        self.store.delete_program(id)?;
        if self
            .store
            .programs_with_map_dir(&p.map_pin_path)?
            .is_empty()
        {
            self.kernel.remove_maps(Path::new(&p.map_pin_path));
        }
        info!(id, "unloaded");
        Ok(gone)
    }

    pub(super) fn managed(&self, id: u32) -> Result<Program> {
        self.store.program(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "program {id} is not loaded by bpfman (see `bpfman list programs`)"
            ))
        })
    }
}
