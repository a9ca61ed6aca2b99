//! Images: pulling into the cache (bounded slots, signature policy), listing,
//! inspecting and removing cached images.

use super::*;

/// The image service and the runtime its network work runs on (manager calls are
/// synchronous; pulls are async underneath).
pub(super) struct ImagePuller {
    /// Err when the cache could not be opened: the daemon still serves everything else,
    /// and image requests get the reason.
    service: std::result::Result<ImageService, Error>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ImagePuller {
    pub(super) fn new(c: &crate::config::ImagesConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bpfman-images")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("starting the image runtime: {e}")))?;
        let service = ImageService::open(c);
        if let Err(e) = &service {
            warn!("image support is off: {e}");
        }
        Ok(Self {
            service,
            rt: Some(rt),
        })
    }

    pub(super) fn service(&self) -> Result<&ImageService> {
        self.service.as_ref().map_err(|e| {
            Error::new(
                ErrorKind::FailedPrecondition,
                format!("image support is off on this daemon: {e}; fix [images] cache_dir"),
            )
        })
    }

    pub(super) fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::internal("the image runtime is gone"))?;
        Ok(rt.block_on(f))
    }
}

impl Drop for ImagePuller {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Manager {
    /// Makes an image available in the cache (the caller must be allowed to pull it).
    pub fn pull_image(
        &self,
        caller: Caller,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let who = self.precheck(caller, Action::Pull, "pull")?;
        let (_, name) = ImageService::normalise(url)?;
        let what = format!("pull {name}");
        let (d, ticket) = self.decide(caller, &who, &Request::Pull { image: &name }, &what)?;
        let r = self
            .pull_counted(caller, &name, policy, creds, progress)
            .and_then(|rec| require_signed(&d, &rec).map(|()| rec));
        ticket.finish(&r);
        r
    }

    /// A pull on behalf of `caller`: at most `[images] max_pulls_per_uid` at once per
    /// caller (root is not counted), so a slow registry holds only its own caller.
    pub(super) fn pull_counted(
        &self,
        caller: Caller,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let _slot = if caller.uid != 0 {
            let mut m = self
                .pulls
                .lock()
                .map_err(|_| Error::internal("lock poisoned"))?;
            let n = m.entry(caller.uid).or_default();
            let max = self.config.images.max_pulls_per_uid;
            if *n >= max {
                if *n == 0 {
                    m.remove(&caller.uid);
                }
                return Err(Error::exhausted(format!(
                    "uid {} already has {max} pulls in progress ([images] max_pulls_per_uid); \
                     wait for them",
                    caller.uid
                )));
            }
            *n += 1;
            Some(PullSlot {
                m: &self.pulls,
                uid: caller.uid,
            })
        } else {
            None
        };
        self.pull_cached(url, policy, creds, progress)
    }

    /// A pull with the daemon's deadline (`[images] pull_timeout_secs`): a registry
    /// that trickles bytes is abandoned.
    pub(super) fn pull_cached(
        &self,
        url: &str,
        policy: PullPolicy,
        creds: &Credentials,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<ImageRecord> {
        let limit = Duration::from_secs(self.config.images.pull_timeout_secs);
        let r = (|| {
            let pull = self.images.service()?.pull(url, policy, creds, progress);
            match self
                .images
                .block_on(async { tokio::time::timeout(limit, pull).await })?
            {
                Ok(r) => r,
                Err(_) => Err(Error::precondition(format!(
                    "pulling {url} took longer than {} s ([images] pull_timeout_secs); the \
                     registry is too slow or stalled; nothing was cached",
                    limit.as_secs()
                ))),
            }
        })();
        let ev = &self.events;
        use crate::metrics::Events;
        match &r {
            Ok(rec) => {
                Events::count(&ev.image_pulls, "ok");
                let sig = if rec.signature.starts_with("verified") {
                    "verified"
                } else if rec.signature.starts_with("unsigned") {
                    "unsigned_allowed"
                } else {
                    "not_checked"
                };
                Events::count(&ev.signature_checks, sig);
            }
            Err(e) => {
                Events::count(&ev.image_pulls, "failed");
                if e.message().contains("signature") {
                    Events::count(&ev.signature_checks, "failed");
                }
            }
        }
        r
    }

    /// Cached images.
    pub fn images(&self, caller: Caller) -> Result<Vec<ImageRecord>> {
        self.authorize_read(caller, Action::List)?;
        self.images.service()?.list()
    }

    /// One cached image, by reference.
    pub fn image(&self, caller: Caller, url: &str) -> Result<ImageRecord> {
        self.authorize_read(caller, Action::Get)?;
        self.images.service()?.cached(url)?.ok_or_else(|| {
            Error::not_found(format!(
                "image {url} is not in the cache (pull it with `bpfman image pull {url}`)"
            ))
        })
    }

    /// Removes cached images (root only: the cache is shared). Loaded programs keep
    /// running; they hold their own copy in the kernel.
    pub fn remove_image(&self, caller: Caller, what: &str) -> Result<Vec<ImageRecord>> {
        if caller.uid != 0 {
            return Err(Error::denied(
                "removing cached images is for root only (the cache is shared by all callers)",
            ));
        }
        self.images.service()?.remove(what)
    }

    /// Applies the signature rules of a new config.
    pub fn reload_images(&self, c: &crate::config::ImagesConfig) -> Result<()> {
        let p = SignaturePolicy::from_config(&c.signatures)?;
        if let Ok(s) = &self.images.service {
            s.set_signature_policy(p);
        }
        Ok(())
    }
}
