//! What callers may read: programs and links as views (record plus kernel facts).

use super::*;

impl Manager {
    pub(super) fn link(&self, id: u32) -> Result<Link> {
        self.store.link(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "link {id} does not exist (see `bpfman list links`)"
            ))
        })
    }

    pub(super) fn link_view(&self, link: Link) -> Result<LinkView> {
        Ok(LinkView {
            program_name: self
                .store
                .program(link.program_id)?
                .map(|p| p.name)
                .unwrap_or_default(),
            dispatcher_revision: self.dispatcher_revision(&link),
            link,
        })
    }

    /// One link, for a caller the policy lets `get`.
    pub fn get_link(&self, caller: Caller, id: u32) -> Result<LinkView> {
        self.authorize_read(caller, Action::Get)?;
        self.link_view(self.link(id)?)
    }

    /// Links (of one program, or all), for a caller the policy lets `list`.
    pub fn list_links(&self, caller: Caller, program_id: Option<u32>) -> Result<Vec<LinkView>> {
        self.authorize_read(caller, Action::List)?;
        self.store
            .links(program_id)?
            .into_iter()
            .map(|l| self.link_view(l))
            .collect()
    }

    pub(super) fn view(&self, p: Program) -> Result<ProgramView> {
        let kernel = self
            .kernel
            .pinned_info(Path::new(&p.pin_path))
            .unwrap_or_else(|_| KernelProgram {
                id: p.id,
                name: p.name.clone(),
                ..Default::default()
            });
        let links = self.store.links(Some(p.id))?.iter().map(|l| l.id).collect();
        let map_used_by = self.store.map_users(p.id)?;
        Ok(ProgramView {
            program: Some(p),
            kernel,
            links,
            map_used_by,
        })
    }

    /// One program: bpfman's record when it has one, else the kernel's facts alone.
    /// A program this daemon manages. Any other id, in the kernel or not, is NOT_FOUND
    /// (as upstream: Get says nothing about programs that are not bpfman's; `list
    /// --all` shows the kernel's others, under the policy's `list`).
    pub fn get(&self, caller: Caller, id: u32) -> Result<ProgramView> {
        self.authorize_read(caller, Action::Get)?;
        self.view(self.managed(id)?)
    }

    /// The views of programs a caller has just loaded (the Load reply).
    pub fn views(&self, programs: Vec<Program>) -> Result<Vec<ProgramView>> {
        programs.into_iter().map(|p| self.view(p)).collect()
    }

    /// Programs, for a caller the policy lets `list`.
    pub fn list(&self, caller: Caller, filter: &ListFilter) -> Result<Vec<ProgramView>> {
        self.authorize_read(caller, Action::List)?;
        let managed = self.store.programs()?;
        let mut out = Vec::new();
        for p in managed.iter().cloned() {
            if !filter
                .metadata
                .iter()
                .all(|(k, v)| p.metadata.get(k) == Some(v))
            {
                continue;
            }
            let v = self.view(p)?;
            if filter
                .kernel_type
                .is_some_and(|t| t != v.kernel.program_type)
            {
                continue;
            }
            out.push(v);
        }
        if filter.all && filter.metadata.is_empty() {
            for k in self.kernel.all_programs() {
                if managed.iter().any(|p| p.id == k.id) {
                    continue;
                }
                if filter.kernel_type.is_some_and(|t| t != k.program_type) {
                    continue;
                }
                out.push(ProgramView {
                    program: None,
                    kernel: k,
                    links: Vec::new(),
                    map_used_by: Vec::new(),
                });
            }
            out.sort_by_key(|v| v.kernel.id);
        }
        Ok(out)
    }
}
