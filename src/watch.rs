//! `[reload] watch`: notices that the config file or a file it names changed, and says so once
//! the writes have settled. The reload itself is the caller's (`reload.rs`), the same as on SIGHUP.
//!
//! The directories that hold the files are watched, not the files: inotify follows an inode, so
//! a file saved by rename, `mv`-ed over, or swapped in by Kubernetes (a new `..data` symlink)
//! would stop notifying. An event only says "look": what changed is judged by each file's
//! [`Stamp`] (size, modification time, inode), so unrelated files in the same directory, or a
//! file opened for reading, never cause a reload, and events, the polling fallback and a reload
//! by signal all agree on what has been applied. Where a directory cannot be watched (no inotify
//! instance left, say), the files are polled instead. Nothing here blocks a request: it runs in
//! the reload task, and the watcher's own thread ends when the [`FileWatch`] is dropped.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How changes are noticed and settled. The defaults are the product's; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchTiming {
    /// A change counts once the files have not changed for this long (one reload per burst).
    pub settle: Duration,
    /// How often the files are looked at when they cannot be watched.
    pub poll_every: Duration,
    /// Test-only: poll even where the directories could be watched, to test the fallback.
    pub poll_only: bool,
}

impl Default for WatchTiming {
    fn default() -> Self {
        WatchTiming {
            settle: Duration::from_secs(1),
            poll_every: Duration::from_secs(2),
            poll_only: false,
        }
    }
}

/// A burst of writes keeps postponing the reload by [`WatchTiming::settle`], but never past this
/// many settle times after the first write (a file rewritten without pause still applies).
const MAX_SETTLE_ROUNDS: u32 = 10;

/// What is known of one file without reading it: enough to see a rewrite in place (size,
/// modification time) and a replacement (inode). `None` where the file cannot be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// The stamp of the file `path` leads to, symlinks followed (Kubernetes' `..data` swap changes
/// the target, not the link).
fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// The directories to watch for `files`: each one's parent as written, and the parent of the
/// file it resolves to when that is elsewhere (a symlink into another directory). Canonical
/// where they exist, so that one directory is watched once however it is spelled.
fn directories(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        let written = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let written = std::fs::canonicalize(&written).unwrap_or(written);
        let resolved = std::fs::canonicalize(file)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf));
        for dir in std::iter::once(written).chain(resolved) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// The watched directory that also holds the log file `log`, if any. Every line written there
/// wakes the watch, which then drops the event: a cost per log line (about 2,800 instructions
/// and a thread wake-up per access line, measured with `bench/instructions.py`).
pub fn watched_log_folder(files: &[PathBuf], log: &Path) -> Option<PathBuf> {
    let watched = directories(files);
    directories(&[log.to_path_buf()])
        .into_iter()
        .find(|dir| watched.contains(dir))
}

/// The warning for a log file `log` in a folder watched for `files`, if it is in one.
pub fn watched_log_warning(files: &[PathBuf], log: &Path) -> Option<String> {
    let folder = watched_log_folder(files, log)?;
    Some(format!(
        "[log] file {} is in {}, a folder watched for config changes ([reload] watch): every \
         log line wakes the watch; give the log a folder of its own (logs/, say)",
        log.display(),
        folder.display()
    ))
}

/// The file names an event must touch to be worth a look: each file's name as written and the
/// name of the file it resolves to (a symlink's target may be named otherwise).
fn names_of(files: &[PathBuf]) -> HashSet<OsString> {
    let mut names = HashSet::new();
    for file in files {
        names.extend(file.file_name().map(OsString::from));
        if let Ok(target) = std::fs::canonicalize(file) {
            names.extend(target.file_name().map(OsString::from));
        }
    }
    names
}

/// Whether a watcher event may have changed a file of interest: it touches one of `names` (an
/// editor's save-by-rename ends on the file's own name), or an entry whose name starts with `..`
/// (Kubernetes swaps the `..data` symlink that its mounted files lead through), or it says
/// nothing of paths (a lost event, a rescan). Reads are never a change, and writes to anything
/// else in the directory (the proxy's own log file above all, which at trace level would
/// otherwise wake the watch with every line it writes) are not looked at.
fn concerns(event: &notify::Result<notify::Event>, names: &HashSet<OsString>) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(_) => return true,
    };
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    if event.paths.is_empty() {
        return true;
    }
    event.paths.iter().any(|path| {
        path.file_name()
            .is_some_and(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
    })
}

/// A change that has been seen but may still be going on.
struct Pending {
    first: Instant,
    last: Instant,
    seen: Vec<Option<Stamp>>,
}

/// Watches a set of files; [`FileWatch::changed`] resolves when some of them changed and the
/// writes have settled. Dropping it stops the watcher and its thread.
pub struct FileWatch {
    files: Vec<PathBuf>,
    /// The stamps when the running config was read (or its reload was attempted).
    applied: Vec<Option<Stamp>>,
    pending: Option<Pending>,
    timing: WatchTiming,
    /// `None`: no events (poll only, or the watcher could not be made).
    watcher: Option<RecommendedWatcher>,
    /// Directories watched now.
    watched: Vec<PathBuf>,
    /// "Something happened to a file of interest", from the watcher's thread.
    events: mpsc::Receiver<()>,
    /// The names of the files (as written and as resolved) that an event must touch to count,
    /// shared with the watcher's thread.
    names: Arc<ArcSwap<HashSet<OsString>>>,
    /// Polling instead of (or besides) events, because a watch could not be set up.
    polling: bool,
    poll: Interval,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("files", &self.files)
            .field("watched", &self.watched)
            .field("polling", &self.polling)
            .finish_non_exhaustive()
    }
}

impl FileWatch {
    /// Starts watching `files` as they are now. Must run inside the Tokio runtime. A watch that
    /// cannot be set up is logged and replaced by polling.
    pub fn start(files: Vec<PathBuf>, timing: WatchTiming) -> FileWatch {
        // One pending "look" is enough: a burst of events folds into it.
        let (tx, events) = mpsc::channel(1);
        let names = Arc::new(ArcSwap::from_pointee(names_of(&files)));
        let watcher = if timing.poll_only {
            None
        } else {
            let interest = names.clone();
            let made = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if concerns(&event, &interest.load()) {
                    let _ = tx.try_send(());
                }
            });
            match made {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    tracing::warn!(
                        "cannot watch the config files ({e}); looking at them every {:?} instead",
                        timing.poll_every
                    );
                    None
                }
            }
        };
        let mut poll = tokio::time::interval(timing.poll_every);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watch = FileWatch {
            applied: files.iter().map(|f| stamp(f)).collect(),
            files,
            pending: None,
            timing,
            polling: watcher.is_none(),
            watcher,
            watched: Vec::new(),
            events,
            names,
            poll,
        };
        watch.watch_directories();
        tracing::info!(
            files = ?watch.files,
            polling = watch.polling,
            "reloading by itself when these files change ([reload] watch)"
        );
        watch
    }

    /// Whether the files are polled (a watch could not be set up, or [`WatchTiming::poll_only`]).
    #[cfg(all(test, target_os = "linux"))]
    fn polling(&self) -> bool {
        self.polling
    }

    /// Resolves with the files that changed, once they have stopped changing for
    /// [`WatchTiming::settle`]; what it returns counts as applied from then on (the caller
    /// reloads). Cancel-safe: the state lives in `self`, so it can sit in a `select!`.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            let due = self.pending.as_ref().map(|p| {
                let settled = p.last + self.timing.settle;
                settled.min(p.first + self.timing.settle * MAX_SETTLE_ROUNDS)
            });
            let wake = due.unwrap_or_else(Instant::now);
            let events = self.watcher.is_some();
            tokio::select! {
                event = self.events.recv(), if events => match event {
                    Some(()) => self.look(),
                    None => {
                        // The watcher's thread is gone: poll from now on.
                        tracing::warn!(
                            "the file watcher stopped; looking at the files every {:?} instead",
                            self.timing.poll_every
                        );
                        self.watcher = None;
                        self.polling = true;
                    }
                },
                _ = self.poll.tick(), if self.polling => {
                    if self.watcher.is_some() {
                        // Retry the directories that could not be watched.
                        self.watch_directories();
                    }
                    self.look();
                }
                _ = tokio::time::sleep_until(wake), if due.is_some() => {
                    if let Some(changed) = self.settle() {
                        return changed;
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// A reload not asked for by this watch (SIGHUP) is about to read the files: what they are
    /// now is what it applies.
    pub fn rebase(&mut self) {
        self.applied = self.files.iter().map(|f| stamp(f)).collect();
        self.pending = None;
    }

    /// The config was replaced: watch its `files` from now on. Files watched before keep what
    /// was applied of them (a write during the reload is still seen); new ones start as they
    /// are now.
    pub fn follow(&mut self, files: Vec<PathBuf>) {
        if files == self.files {
            // A symlink may lead elsewhere now (Kubernetes' `..data`): watch where it leads.
            self.names.store(Arc::new(names_of(&files)));
            self.watch_directories();
            return;
        }
        let before: HashMap<&PathBuf, Option<Stamp>> = self
            .files
            .iter()
            .zip(self.applied.iter().copied())
            .collect();
        let applied = files
            .iter()
            .map(|f| before.get(f).copied().unwrap_or_else(|| stamp(f)))
            .collect();
        self.applied = applied;
        self.names.store(Arc::new(names_of(&files)));
        self.files = files;
        self.pending = None;
        self.watch_directories();
        tracing::info!(files = ?self.files, "the files watched follow the new config");
    }

    /// Looks at the files after an event or a poll: a difference starts (or prolongs) a pending
    /// change.
    fn look(&mut self) {
        let now: Vec<Option<Stamp>> = self.files.iter().map(|f| stamp(f)).collect();
        match &mut self.pending {
            Some(p) if p.seen != now => {
                p.seen = now;
                p.last = Instant::now();
            }
            Some(_) => {}
            None if now != self.applied => {
                let at = Instant::now();
                self.pending = Some(Pending {
                    first: at,
                    last: at,
                    seen: now,
                });
            }
            None => {}
        }
    }

    /// The settle time of a pending change is up: the files that changed, if they have stopped
    /// changing (or have changed for too long) and differ from what was applied.
    fn settle(&mut self) -> Option<Vec<PathBuf>> {
        let now: Vec<Option<Stamp>> = self.files.iter().map(|f| stamp(f)).collect();
        let pending = self.pending.as_mut()?;
        let overdue = pending.first.elapsed() >= self.timing.settle * MAX_SETTLE_ROUNDS;
        if pending.seen != now && !overdue {
            // Still being written.
            pending.seen = now;
            pending.last = Instant::now();
            return None;
        }
        self.pending = None;
        let changed: Vec<PathBuf> = self
            .files
            .iter()
            .zip(now.iter().zip(&self.applied))
            .filter(|(_, (now, applied))| now != applied)
            .map(|(file, _)| file.clone())
            .collect();
        self.applied = now;
        (!changed.is_empty()).then_some(changed)
    }

    /// Brings the watched directories in line with the files: new ones watched, old ones
    /// dropped. A directory that cannot be watched turns polling on (logged once).
    fn watch_directories(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted = directories(&self.files);
        for dir in self.watched.extract_if(.., |d| !wanted.contains(d)) {
            // A directory that is gone has already lost its watch.
            let _ = watcher.unwatch(&dir);
        }
        let mut failed = false;
        for dir in wanted {
            if self.watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(dir),
                Err(e) => {
                    failed = true;
                    if !self.polling {
                        tracing::warn!(
                            "cannot watch {} ({e}); looking at the files every {:?} instead",
                            dir.display(),
                            self.timing.poll_every
                        );
                    }
                }
            }
        }
        if self.polling && !failed {
            tracing::info!("every directory of the config files is watched again; polling stops");
        }
        self.polling = failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("acp-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_log_file_beside_a_watched_file_is_noticed() {
        let dir = scratch("log-beside");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let files = [dir.join("proxy.toml")];
        let canonical = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(
            watched_log_folder(&files, &dir.join("proxy.log")),
            Some(canonical)
        );
        assert_eq!(
            watched_log_folder(&files, &dir.join("logs/proxy.log")),
            None
        );
    }

    #[test]
    fn only_events_on_the_files_or_a_kubernetes_swap_count() {
        let names = names_of(&[PathBuf::from("/etc/acp/proxy.toml")]);
        let event = |kind: EventKind, paths: &[&str]| {
            let mut e = notify::Event::new(kind);
            e.paths = paths.iter().map(PathBuf::from).collect();
            Ok(e)
        };
        let write = EventKind::Modify(notify::event::ModifyKind::Any);
        assert!(concerns(&event(write, &["/etc/acp/proxy.toml"]), &names));
        // Save by rename: the file's own name is the destination.
        assert!(concerns(
            &event(write, &["/etc/acp/.proxy.toml.swp", "/etc/acp/proxy.toml"]),
            &names
        ));
        assert!(concerns(&event(write, &["/etc/acp/..data"]), &names));
        assert!(concerns(&event(write, &[]), &names));
        assert!(concerns(&Err(notify::Error::generic("lost")), &names));
        // The proxy's own log beside the config, and reads of the config itself.
        assert!(!concerns(&event(write, &["/etc/acp/proxy.log"]), &names));
        let read = EventKind::Access(notify::event::AccessKind::Any);
        assert!(!concerns(&event(read, &["/etc/acp/proxy.toml"]), &names));
    }

    #[test]
    fn directories_are_the_parents_as_written_and_as_resolved() {
        let dir = scratch("dirs");
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("secret"), "s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(elsewhere.join("secret"), dir.join("secret")).unwrap();
        let files = [dir.join("secret"), PathBuf::from("proxy.toml")];
        let dirs = directories(&files);
        assert_eq!(dirs[0], std::fs::canonicalize(&dir).unwrap());
        let cwd = std::fs::canonicalize(".").unwrap();
        assert_eq!(dirs.iter().filter(|d| **d == cwd).count(), 1, "{dirs:?}");
        #[cfg(unix)]
        assert!(
            dirs.contains(&std::fs::canonicalize(&elsewhere).unwrap()),
            "{dirs:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rewrite_in_place_and_a_replacement_change_the_stamp() {
        let dir = scratch("stamp");
        let file = dir.join("secret");
        std::fs::write(&file, "one").unwrap();
        let first = stamp(&file);
        assert!(first.is_some());
        std::fs::write(&file, "two!").unwrap();
        let rewritten = stamp(&file);
        assert_ne!(first, rewritten, "same path, new content");
        std::fs::write(dir.join("tmp"), "two!").unwrap();
        std::fs::rename(dir.join("tmp"), &file).unwrap();
        #[cfg(unix)]
        assert_ne!(rewritten, stamp(&file), "renamed over");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(stamp(&file), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Threads of this process named like notify's inotify loop.
    #[cfg(target_os = "linux")]
    fn watcher_threads() -> usize {
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("notify-rs"))
            .count()
    }

    // The one test of this crate that makes a watcher, so the thread count is its own.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_change_is_reported_once_settled_and_the_thread_ends_on_drop() {
        let dir = scratch("settle");
        let file = dir.join("proxy.toml");
        std::fs::write(&file, "a").unwrap();
        let before = watcher_threads();
        let timing = WatchTiming {
            settle: Duration::from_millis(100),
            ..WatchTiming::default()
        };
        let mut watch = FileWatch::start(vec![file.clone()], timing);
        assert!(!watch.polling());
        assert_eq!(watcher_threads(), before + 1);
        // Another file in the directory is no change.
        std::fs::write(dir.join("unrelated"), "x").unwrap();
        for n in 0..5 {
            std::fs::write(&file, format!("b{n}")).unwrap();
        }
        let changed = tokio::time::timeout(Duration::from_secs(10), watch.changed()).await;
        assert_eq!(changed.unwrap(), std::slice::from_ref(&file));
        let again = tokio::time::timeout(Duration::from_millis(400), watch.changed()).await;
        assert!(again.is_err(), "one burst, one change");
        drop(watch);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while watcher_threads() > before {
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher thread lives on"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
