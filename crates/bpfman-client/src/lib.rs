//! The client library of the bpfman daemon: one typed async client over the daemon's unix
//! socket for `bpfman.v1` (upstream's service, unchanged) and `bpfman.ext.v1` (links,
//! records, images, system). The CLI and the Kubernetes agent reach the daemon only
//! through it.
//!
//! Requests are built from the vocabulary (`bpfman-types`), so a caller never writes the
//! wire translation itself; replies are the wire's own messages. Errors keep the gRPC code
//! and say whether the same request may be retried ([`Error::retry`], documented in
//! docs/api.md).

mod error;
mod request;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bpfman_api::ext::{self, bpfman_ext_client::BpfmanExtClient};
use bpfman_api::v1::{self, bpfman_client::BpfmanClient};
use bpfman_types::AttachSpec;
use tonic::transport::{Channel, Endpoint};

pub use bpfman_api::{DEFAULT_SOCKET, ext as ext_proto, v1 as v1_proto};
pub use error::{Error, Retry};
pub use request::{Load, registry_auth_from_base64};

/// Replies (a long listing) may be larger than tonic's default 4 MiB.
const MAX_REPLY: usize = 64 << 20;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection to one daemon. Cheap to clone (the channel is shared); calls on clones
/// run concurrently.
#[derive(Clone)]
pub struct Client {
    v1: BpfmanClient<Channel>,
    ext: BpfmanExtClient<Channel>,
    socket: PathBuf,
    /// The tenant every request is made for (root only), as the header's value.
    on_behalf: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// Connects to the daemon at `socket`. A failure says why in terms of the socket: no
    /// such file (is the daemon running?), permission (the socket group), or the transport.
    pub async fn connect(socket: &Path) -> Result<Self> {
        let uri = format!("unix://{}", socket.display());
        let endpoint =
            Endpoint::from_shared(uri).map_err(|e| Error::connect(socket, e.to_string()))?;
        let channel = endpoint.connect().await.map_err(|e| {
            let hint = match std::os::unix::net::UnixStream::connect(socket) {
                Err(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    "permission denied: only root and the daemon's socket group may connect"
                        .to_string()
                }
                Err(io) if io.kind() == std::io::ErrorKind::NotFound => {
                    "no such socket: is `bpfman daemon` running? (--socket / BPFMAN_SOCKET)"
                        .to_string()
                }
                Err(io) => io.to_string(),
                Ok(_) => e.to_string(),
            };
            Error::connect(socket, hint)
        })?;
        Ok(Self {
            v1: BpfmanClient::new(channel.clone()).max_decoding_message_size(MAX_REPLY),
            ext: BpfmanExtClient::new(channel).max_decoding_message_size(MAX_REPLY),
            socket: socket.to_path_buf(),
            on_behalf: None,
        })
    }

    /// A client (on the same connection) whose every request acts on behalf of Kubernetes
    /// namespace `ns`: decided by the policy rules naming that namespace, owned and counted
    /// as the namespace's. Only a root caller may do this (the daemon refuses anyone else).
    pub fn on_behalf_of_namespace(&self, ns: &str) -> Result<Self> {
        let v = format!("kubernetes-namespace/{ns}")
            .parse()
            .map_err(|_| Error::invalid(format!("'{ns}' cannot be sent as a namespace")))?;
        let mut c = self.clone();
        c.on_behalf = Some(v);
        Ok(c)
    }

    /// A request carrying the tenant header when there is one.
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(v) = &self.on_behalf {
            r.metadata_mut()
                .insert(bpfman_types::metadata::ON_BEHALF_OF_HEADER, v.clone());
        }
        r
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    // ---- bpfman.v1 ----

    /// Loads the programs `req` names; every program of the object is loaded and pinned,
    /// or none is.
    pub async fn load(&mut self, req: v1::LoadRequest) -> Result<v1::LoadResponse> {
        Ok(self.v1.load(self.req(req)).await?.into_inner())
    }

    /// Unloads a program; when this returns the kernel no longer has it.
    pub async fn unload(&mut self, id: u32) -> Result<()> {
        self.v1.unload(self.req(v1::UnloadRequest { id })).await?;
        Ok(())
    }

    /// Attaches program `program_id` as `spec` asks; returns the link id.
    pub async fn attach(
        &mut self,
        program_id: u32,
        spec: &AttachSpec,
        metadata: HashMap<String, String>,
    ) -> Result<u32> {
        let r = self
            .v1
            .attach(self.req(v1::AttachRequest {
                id: program_id,
                attach: Some(bpfman_types::proto::attach_info(spec, metadata)),
            }))
            .await?;
        Ok(r.into_inner().link_id)
    }

    /// Detaches a link; when this returns the kernel no longer runs it there.
    pub async fn detach(&mut self, link_id: u32) -> Result<()> {
        self.v1
            .detach(self.req(v1::DetachRequest { link_id }))
            .await?;
        Ok(())
    }

    /// Programs, optionally of one kernel type, only bpfman's unless `all`, matching all
    /// of `metadata`.
    pub async fn list(
        &mut self,
        kernel_type: Option<u32>,
        all: bool,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<v1::list_response::ListResult>> {
        let r = self
            .v1
            .list(self.req(v1::ListRequest {
                program_type: kernel_type,
                bpfman_programs_only: Some(!all),
                match_metadata: metadata,
            }))
            .await?;
        Ok(r.into_inner().results)
    }

    /// One program; NOT_FOUND when bpfman does not manage it.
    pub async fn get(&mut self, id: u32) -> Result<v1::GetResponse> {
        Ok(self
            .v1
            .get(self.req(v1::GetRequest { id }))
            .await?
            .into_inner())
    }

    /// Pulls an image into the daemon's cache (upstream's call, without progress).
    pub async fn pull_bytecode(&mut self, image: v1::BytecodeImage) -> Result<()> {
        self.v1
            .pull_bytecode(self.req(v1::PullBytecodeRequest { image: Some(image) }))
            .await?;
        Ok(())
    }

    // ---- bpfman.ext.v1 ----

    /// Links, optionally of one program.
    pub async fn list_links(&mut self, program_id: Option<u32>) -> Result<Vec<ext::LinkInfo>> {
        let r = self
            .ext
            .list_links(self.req(ext::ListLinksRequest { program_id }))
            .await?;
        Ok(r.into_inner().links)
    }

    pub async fn get_link(&mut self, link_id: u32) -> Result<ext::LinkInfo> {
        Ok(self
            .ext
            .get_link(self.req(ext::GetLinkRequest { link_id }))
            .await?
            .into_inner())
    }

    /// bpfman's own records (kind, owner) of the programs the caller may see, by id.
    pub async fn program_records(&mut self) -> Result<HashMap<u32, ext::ProgramRecord>> {
        let r = self
            .ext
            .list_program_records(self.req(ext::ListProgramRecordsRequest {}))
            .await?;
        Ok(r.into_inner()
            .programs
            .into_iter()
            .map(|p| (p.id, p))
            .collect())
    }

    pub async fn system_info(&mut self) -> Result<ext::SystemInfoResponse> {
        Ok(self
            .ext
            .system_info(self.req(ext::SystemInfoRequest {}))
            .await?
            .into_inner())
    }

    /// Re-reads the daemon's configuration (root, or a policy granting `reload`).
    pub async fn reload(&mut self) -> Result<ext::ReloadResponse> {
        Ok(self
            .ext
            .reload(self.req(ext::ReloadRequest {}))
            .await?
            .into_inner())
    }

    /// Makes store, bpffs and kernel agree now; returns what was repaired.
    pub async fn reconcile(&mut self) -> Result<ext::ReconcileResponse> {
        Ok(self
            .ext
            .reconcile(self.req(ext::ReconcileRequest {}))
            .await?
            .into_inner())
    }

    /// Pulls an image, calling `progress` for each progress event; returns the image.
    pub async fn pull_image(
        &mut self,
        req: ext::PullImageRequest,
        mut progress: impl FnMut(&ext::PullProgress),
    ) -> Result<ext::ImageInfo> {
        let mut stream = self.ext.pull_image(self.req(req)).await?.into_inner();
        loop {
            match stream.message().await? {
                Some(ev) => match ev.event {
                    Some(ext::pull_image_event::Event::Progress(p)) => progress(&p),
                    Some(ext::pull_image_event::Event::Image(i)) => return Ok(i),
                    None => {}
                },
                None => {
                    return Err(Error::protocol(
                        "the daemon ended the pull without a result",
                    ));
                }
            }
        }
    }

    pub async fn list_images(&mut self) -> Result<Vec<ext::ImageInfo>> {
        Ok(self
            .ext
            .list_images(self.req(ext::ListImagesRequest {}))
            .await?
            .into_inner()
            .images)
    }

    pub async fn inspect_image(&mut self, url: &str) -> Result<ext::ImageInfo> {
        let r = self
            .ext
            .inspect_image(self.req(ext::InspectImageRequest {
                url: url.to_string(),
            }))
            .await?;
        Ok(r.into_inner())
    }

    /// Removes cached images by reference or digest; returns what was removed.
    pub async fn remove_image(&mut self, what: &str) -> Result<Vec<ext::ImageInfo>> {
        let r = self
            .ext
            .remove_image(self.req(ext::RemoveImageRequest {
                image: what.to_string(),
            }))
            .await?;
        Ok(r.into_inner().removed)
    }
}
