//! The image organ's actor: saves a generation every `image.interval_s` (when something changed) or on
//! command, writes exports, keeps the event sequence's reservation ahead of use, and answers `status`.
//! Saving reads every data file and may wait for memory: it runs inside the handler, so saves and exports
//! are serialised with each other (two never interleave their generations) and `status` waits behind one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::boot::{dir, image_path};
use super::write::{self, Picture};
use super::{
    seq, ImageArgs, ImageError, ImageInfo, ImageMsg, ImageStatus, MemoryRecord, PersonaImage,
};
use crate::events::{unix_now, Event};
use crate::job::Jobs;

/// Global name of the image actor.
pub const IMAGE_NAME: &str = "image";

/// The image organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImageActor;

/// Its state.
pub struct ImageState {
    args: ImageArgs,
    /// The newest generation number used (or found at boot).
    generation: u64,
    /// The newest image.
    last: Option<ImageInfo>,
    /// What the newest generation pictured (a periodic save of the same is skipped).
    fingerprint: Option<String>,
    /// Event numbers up to this are reserved on disk.
    reserved: u64,
    /// When the last periodic save was tried.
    last_try: Instant,
    jobs: Jobs,
}

fn read_text(path: &Path) -> Result<String, ImageError> {
    std::fs::read_to_string(path).map_err(|e| ImageError::io("cannot read", path, e))
}

impl ImageState {
    /// What the organs report, for generation `generation`; every memory row when `rows`.
    async fn picture(&self, generation: u64, rows: bool) -> Result<Picture, ImageError> {
        let s = self.args.settings.load_full();
        let memory = match self.args.memory.snapshot(rows).await {
            Ok(m) => Some(m),
            Err(e) if rows => return Err(ImageError::Memory(e.to_string())),
            Err(e) => {
                tracing::warn!(event = "image.memory_unrecorded", error = %e, "memory did not answer: this image records no memory version");
                None
            }
        };
        let personas = self
            .args
            .personas
            .snapshot()
            .iter()
            .map(|(name, h)| {
                (
                    name.clone(),
                    PersonaImage {
                        adapter: super::migrate::adapter_of(&h.model),
                        model: h.model.clone(),
                        generation: h.generation,
                    },
                )
            })
            .collect();
        Ok(Picture {
            generation,
            event_seq: self.args.hub.current_seq(),
            seq_mark: self.reserved,
            personas,
            settings: read_text(&self.args.settings_path)?,
            codex: read_text(&s.codex_path)?,
            base_model: Some(s.llm.embedded.model_path.display().to_string()),
            memory: memory.as_ref().map(|m| MemoryRecord {
                table: m.table.clone(),
                version: m.version,
                rows: m.rows,
                included: m.ipc.is_some(),
            }),
            memory_rows: memory.and_then(|m| m.ipc),
        })
    }

    /// Saves a new generation; `Ok(None)` when `skip_same` and nothing changed since the last one.
    async fn save(
        &mut self,
        reason: &str,
        skip_same: bool,
    ) -> Result<Option<ImageInfo>, ImageError> {
        let started = Instant::now();
        let generation = self.generation + 1;
        let picture = self.picture(generation, false).await?;
        let (data_dir, dir) = (self.args.data_dir.clone(), dir(&self.args.data_dir));
        let last = self.fingerprint.clone();
        let keep = self.args.settings.load().image.keep;
        let reason_s = reason.to_string();
        let written = tokio::task::spawn_blocking(move || {
            let (manifest, files) = write::take(&data_dir, &picture, unix_now())?;
            let fp = write::fingerprint(&manifest);
            if skip_same && last.as_deref() == Some(fp.as_str()) {
                return Ok(None);
            }
            let path = image_path(&dir, generation);
            let bytes = write::write(&path, &manifest, &files, None)?;
            let pruned = write::prune(&dir, keep);
            Ok::<_, ImageError>(Some((fp, pruned, info(&path, &manifest, bytes, &reason_s))))
        })
        .await
        .map_err(|e| ImageError::Io(format!("the save stopped: {e}")))??;
        let Some((fp, pruned, mut info)) = written else {
            return Ok(None);
        };
        info.duration_ms = started.elapsed().as_millis() as u64;
        self.generation = generation;
        self.fingerprint = Some(fp);
        self.last = Some(info.clone());
        tracing::debug!(
            event = "image.pruned",
            count = pruned,
            "older generations deleted"
        );
        self.publish(&info);
        Ok(Some(info))
    }

    /// Writes a self-contained image (memory rows included) to `path`.
    async fn export(&mut self, path: PathBuf) -> Result<ImageInfo, ImageError> {
        let started = Instant::now();
        // The daemon writes where it is told: never over a file that is not an image (a typo must not
        // replace settings.toml, or anything else its user can write).
        if path.is_dir() {
            return Err(ImageError::Invalid(format!(
                "{} is a folder",
                path.display()
            )));
        }
        if path.exists() && !super::format::looks_like_image(&path) {
            return Err(ImageError::Invalid(format!(
                "{} exists and is not a living image: refusing to replace it",
                path.display()
            )));
        }
        let picture = self.picture(self.generation.max(1), true).await?;
        let data_dir = self.args.data_dir.clone();
        let mut info = tokio::task::spawn_blocking(move || {
            let (manifest, files) = write::take(&data_dir, &picture, unix_now())?;
            let bytes = write::write(&path, &manifest, &files, picture.memory_rows.as_deref())?;
            Ok::<_, ImageError>(info(&path, &manifest, bytes, "export"))
        })
        .await
        .map_err(|e| ImageError::Io(format!("the export stopped: {e}")))??;
        info.duration_ms = started.elapsed().as_millis() as u64;
        self.publish(&info);
        Ok(info)
    }

    fn publish(&self, info: &ImageInfo) {
        self.args.hub.publish(Event::ImageSaved {
            generation: info.generation,
            path: info.path.clone(),
            bytes: info.bytes,
            reason: info.reason.clone(),
            duration_ms: info.duration_ms,
        });
    }

    /// Moves the event sequence's reservation ahead when use nears it.
    fn reserve(&mut self) -> Result<(), ImageError> {
        let reserve = self.args.settings.load().image.seq_reserve;
        let current = self.args.hub.current_seq();
        if seq::needs_more(current, self.reserved, reserve) {
            let upto = current.saturating_add(reserve);
            seq::write(&seq::path(&self.args.data_dir), upto)?;
            self.reserved = upto;
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), ActorProcessingErr> {
        // Losing the reservation could repeat event numbers after a crash: fail loudly, be restarted.
        self.reserve()?;
        let every = self.args.settings.load().image.interval_s;
        if every > 0 && self.last_try.elapsed() >= Duration::from_secs(every) {
            self.last_try = Instant::now();
            if let Err(e) = self.save("interval", true).await {
                tracing::error!(event = "image.save_failed", reason = "interval", error = %e, "periodic living image not written; the previous generation stays");
            }
        }
        Ok(())
    }

    fn status(&self) -> ImageStatus {
        ImageStatus {
            last: self.last.clone(),
            kept: super::boot::generations(&dir(&self.args.data_dir)).len(),
            interval_s: self.args.settings.load().image.interval_s,
            seq_reserved: self.reserved,
        }
    }
}

fn info(path: &Path, m: &super::Manifest, bytes: u64, reason: &str) -> ImageInfo {
    ImageInfo {
        generation: m.generation,
        path: path.display().to_string(),
        bytes,
        created_at: m.created_at,
        files: m.files.len(),
        memory_rows: m.memory.as_ref().map(|r| r.rows),
        duration_ms: 0,
        reason: reason.into(),
    }
}

impl Actor for ImageActor {
    type Msg = ImageMsg;
    type State = ImageState;
    type Arguments = ImageArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ImageMsg>,
        args: ImageArgs,
    ) -> Result<ImageState, ActorProcessingErr> {
        // A restart reads the reservation and the generations afresh: they are on disk, not in the arguments.
        let reserved = seq::read(&seq::path(&args.data_dir))
            .unwrap_or(0)
            .max(args.booted.reserved);
        let generation = super::boot::generations(&dir(&args.data_dir))
            .first()
            .map(|(g, _)| *g)
            .unwrap_or(0)
            .max(args.booted.generation);
        let mut jobs = Jobs::new(format!("root/{IMAGE_NAME}"), args.hub.clone());
        let (me, settings) = (myself.clone(), args.settings.clone());
        let tick = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(settings.load().image.tick_ms)).await;
                if me.cast(ImageMsg::Tick).is_err() {
                    return;
                }
            }
        };
        jobs.spawn(&myself.get_cell(), "tick", tick).await?;
        let last = args.booted.newest.clone();
        tracing::info!(
            event = "image.ready",
            generation,
            reserved,
            "image organ ready"
        );
        Ok(ImageState {
            args,
            generation,
            last,
            fingerprint: None,
            reserved,
            last_try: Instant::now(),
            jobs,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ImageMsg>,
        msg: ImageMsg,
        state: &mut ImageState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ImageMsg::Save(reason, reply) => {
                let r = state.save(&reason, reply.is_none()).await;
                if let Err(e) = &r {
                    tracing::error!(event = "image.save_failed", reason = %reason, error = %e, "living image not written; the previous generation stays");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r.and_then(|i| {
                        i.ok_or_else(|| ImageError::Io("nothing was written".into()))
                    }));
                }
            }
            ImageMsg::Export(path, reply) => {
                let _ = reply.send(state.export(path).await);
            }
            ImageMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            ImageMsg::Tick => state.tick().await?,
            ImageMsg::Crash => panic!("debug_crash requested for image"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ImageMsg>,
        event: SupervisionEvent,
        state: &mut ImageState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((label, _)) = state.jobs.supervise(&event) {
            // Without its clock the organ neither saves nor reserves: restart it whole.
            return Err(format!("the image organ's {label} job ended").into());
        }
        Ok(())
    }
}
