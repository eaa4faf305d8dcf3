//! `intelwall run`: enforce, and keep enforcing through reloads, expiry and
//! restarts.
//!
//! Start-up adopts a pinned state left by an earlier agent when its format
//! version, config fingerprint and update sequence all match, and otherwise
//! builds fresh maps and swaps the program on each pinned link in one step.
//! Either way the interface is never without a program.
//!
//! While running, a change of the config or of a feed file (inotify), SIGHUP,
//! a due URL refresh, or the expiry timer leads to a new compilation, which
//! the dataplane applies as a diff made visible at one instant. A reload whose
//! input is broken keeps the last good state and logs why.
//!
//! SIGTERM leaves protection in place (pinned program, links and maps), as a
//! service manager stopping or restarting the agent expects. SIGINT, the
//! interactive stop, detaches and removes the pins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use intelwall_common::Control;
use jiff::Timestamp;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::compile::{self, Compiled, Registry};
use crate::config::Config;
use crate::dataplane::{Capacity, Dataplane, DataplaneError, PinnedCounterMaps, UpdateStats};
use crate::events::{Decoder, LogSlots, Observation, Sink};
use crate::metrics::{self, MetricsInput};
use crate::pin::{self, PinLayout, PinnedFeed, PinnedInterface, PinnedState};
use crate::pipeline::{self, Loaded};
use crate::report::CounterReport;
use crate::source::FetchOptions;
use crate::stats::{Ledger, OTHER_INTERFACE, RuleMatches, rule_matches};

/// Environment variable naming a file whose content (an RFC 3339 time) the
/// agent uses as the current time, for tests of expiry.
pub const CLOCK_FILE_ENV: &str = "INTELWALL_CLOCK_FILE";

/// Options of `intelwall run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    pub json: bool,
    /// Where sampled events go as JSON lines; `-` for stdout.
    pub events: Option<PathBuf>,
    /// Address to serve Prometheus metrics on.
    pub metrics: Option<SocketAddr>,
}

/// How the agent stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGINT: detach and remove the pins.
    Detach,
    /// SIGTERM: leave protection in place.
    Leave,
}

/// Why a new compilation is due.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Trigger {
    /// Watched files changed: the config or local feed files, as absolute
    /// paths.
    FileChanged(Vec<PathBuf>),
    Hangup,
    Refresh,
    Expiry,
}

impl Trigger {
    /// Folds a trigger that arrived while this one waited into it. SIGHUP
    /// reads every feed and a reload after a file change also downloads due
    /// URL feeds and evaluates expiry, so the wider trigger is kept, with
    /// the changed paths of both.
    fn merge(self, later: Trigger) -> Trigger {
        match (self, later) {
            (Trigger::Hangup, _) | (_, Trigger::Hangup) => Trigger::Hangup,
            (Trigger::FileChanged(mut paths), Trigger::FileChanged(more)) => {
                for path in more {
                    if !paths.contains(&path) {
                        paths.push(path);
                    }
                }
                Trigger::FileChanged(paths)
            }
            (Trigger::FileChanged(paths), _) | (_, Trigger::FileChanged(paths)) => {
                Trigger::FileChanged(paths)
            }
            (Trigger::Refresh, _) | (_, Trigger::Refresh) => Trigger::Refresh,
            (Trigger::Expiry, Trigger::Expiry) => Trigger::Expiry,
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::FileChanged(paths) => {
                f.write_str("file changed: ")?;
                for (index, path) in paths.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", path.display())?;
                }
                Ok(())
            }
            Trigger::Hangup => f.write_str("SIGHUP"),
            Trigger::Refresh => f.write_str("URL refresh due"),
            Trigger::Expiry => f.write_str("expiry check"),
        }
    }
}

/// Effect on the kernel maps of installing a new state.
#[derive(Clone, Copy, Debug)]
enum Installed {
    /// The maps already enforced the new state, so nothing was written.
    Unchanged,
    /// The difference was written into the maps.
    Updated(UpdateStats),
    /// A new map set was built and written whole.
    Rebuilt,
}

/// A new state to enforce: a whole reload, or a compilation over the same
/// intel (expiry).
enum Next {
    Loaded(Box<Loaded>),
    Compiled(Box<Compiled>),
}

impl Next {
    fn compiled(&self) -> &Compiled {
        match self {
            Next::Loaded(loaded) => &loaded.compiled,
            Next::Compiled(compiled) => compiled,
        }
    }
}

/// Takes the lock that makes this the only agent managing the pinned state,
/// held until the process exits (an exit of any kind releases it).
fn lock_agent(layout: &PinLayout) -> Result<std::fs::File> {
    let path = layout.agent_lock();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if locked != 0 {
        anyhow::bail!(
            "another intelwall agent already manages {} (it holds {}); stop it first",
            layout.root.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Reads the current time, from the clock file when one is set.
fn now() -> Timestamp {
    if let Some(path) = std::env::var_os(CLOCK_FILE_ENV)
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(time) = text.trim().parse::<Timestamp>()
    {
        return time;
    }
    Timestamp::now()
}

struct Agent {
    config_path: PathBuf,
    layout: PinLayout,
    dataplane: Dataplane,
    current: Loaded,
    map_set: u64,
    sequence: u64,
    interfaces: Vec<PinnedInterface>,
    ledger: Ledger,
    observation: Observation,
    /// Whether sampled events have a reader; without one, no class names a
    /// log rule and the kernel does no sampling.
    logging: bool,
    /// Where new ring buffers and rule names go when events are read.
    events: Option<mpsc::UnboundedSender<crate::events::ReaderUpdate>>,
    /// Reloads that failed since start.
    reload_failures: u64,
    /// When each feed last loaded successfully.
    feed_loads: BTreeMap<String, Timestamp>,
    /// Set when an update failed midway, so that the maps may not match
    /// `current`: the next change rebuilds the maps instead of diffing.
    dirty: bool,
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(options: RunOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: RunOptions) -> Result<()> {
    let config = Config::load(&options.config)?;
    if config.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no [[interface]] configured; add one, e.g. [[interface]] name = \"eth0\"",
            options.config.display()
        );
    }
    let layout = PinLayout::new(&config.agent.pin_dir, &config.agent.state_dir);
    layout.prepare()?;
    let _lock = lock_agent(&layout)?;

    let sink = match &options.events {
        Some(path) => Some(
            Sink::open(path)
                .with_context(|| format!("cannot open the events file {}", path.display()))?,
        ),
        None => None,
    };
    let mut agent = Agent::start(&options.config, &config, layout, sink.is_some())?;
    if let Some(sink) = sink {
        agent.start_events(sink);
    }
    let (scrape_tx, mut scrapes) = mpsc::channel::<oneshot::Sender<String>>(8);
    if let Some(address) = options.metrics {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve metrics on {address}"))?;
        tracing::info!(%address, "serving Prometheus metrics at /metrics");
        tokio::spawn(metrics::serve(listener, scrape_tx));
    }
    // The handlers go in before READY=1: a supervisor may signal as soon as
    // it reads it, and an unhandled SIGTERM or SIGINT would kill the agent
    // without leaving or removing its pins as documented.
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let (trigger_tx, mut triggers) = mpsc::channel::<Trigger>(16);
    let _watcher = watch_files(&agent.current.config, trigger_tx.clone());
    spawn_timers(&agent.current, trigger_tx.clone());
    crate::service::notify_ready();

    let stop = loop {
        tokio::select! {
            _ = interrupt.recv() => break Stop::Detach,
            _ = terminate.recv() => break Stop::Leave,
            _ = hangup.recv() => agent.recompile(&Trigger::Hangup),
            Some(reply) = scrapes.recv() => {
                let _ = reply.send(agent.metrics_text());
            }
            Some(mut trigger) = triggers.recv() => {
                // Editors write a file in several steps; wait for the last.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while let Ok(later) = triggers.try_recv() {
                    trigger = trigger.merge(later);
                }
                agent.recompile(&trigger);
            }
        }
    };
    crate::service::notify_stopping();
    agent.stop(stop, options.json)
}

impl Agent {
    fn start(
        config_path: &Path,
        config: &Config,
        layout: PinLayout,
        logging: bool,
    ) -> Result<Agent> {
        crate::dataplane::prepare_loader();
        let fingerprint = pin::fingerprint(&config.text);
        let pinned = layout.read_state().filter(|state| {
            state.version == pin::FORMAT_VERSION && state.fingerprint == fingerprint
        });
        if let Some(state) = pinned {
            match Agent::adopt(config_path, &layout, &state, logging) {
                Ok(agent) => return Ok(agent),
                Err(error) => tracing::warn!(
                    error = crate::cli::error_text(&error),
                    "cannot adopt the pinned state; replacing it"
                ),
            }
        } else if !layout.pinned_interfaces().is_empty() {
            tracing::info!("pinned state from another config or version; replacing it");
        }
        Agent::replace(config_path, layout, logging)
    }

    /// Reuses the pinned maps: reads back what they hold and applies the new
    /// compilation as a diff.
    fn adopt(
        config_path: &Path,
        layout: &PinLayout,
        state: &PinnedState,
        logging: bool,
    ) -> Result<Agent> {
        let maps_dir = layout.maps_dir(state.map_set);
        anyhow::ensure!(maps_dir.exists(), "{} is missing", maps_dir.display());
        let slots = state.counters.slots.len().saturating_sub(1) as u32;
        let mut dataplane = Dataplane::load_with(state.capacity.into(), Some(&maps_dir), slots)?;
        let sequence = dataplane.control(Control::Sequence)?;
        anyhow::ensure!(
            sequence != 0 && u64::from(sequence) == state.sequence % u64::from(u32::MAX),
            "the pinned maps were left in the middle of an update"
        );
        let started = Instant::now();
        let image = dataplane.read_image(state.registry.class_id_limit())?;
        let loaded = load(config_path, &state.registry)?;
        let old = compile::Enforced {
            registry: &state.registry,
            image: &image,
        };
        let observation = Observation::new(
            &loaded.compiled,
            &loaded.config,
            &state.counters.log_slots,
            logging,
        );
        set_interface_slots(&dataplane, &loaded.config)?;
        dataplane.set_sequence(0)?;
        dataplane.set_log_rules(&observation.settings)?;
        let stats =
            dataplane.apply_with(old, loaded.compiled.enforced(), observation.extras.clone())?;
        let interfaces = attach_all(
            &mut dataplane,
            &loaded.config,
            layout,
            &state.interfaces,
            Takeover::Adopt,
        )?;
        tracing::info!(
            upserted = stats.upserted,
            removed = stats.removed,
            took_ms = started.elapsed().as_millis() as u64,
            "adopted the pinned maps"
        );
        // The maps are the same, so the counts settled so far and the
        // baseline they were settled at still hold.
        let mut ledger = Ledger::from_state(&state.counters);
        ledger.settle(
            &state.counters.rules,
            &dataplane.snapshot(state.counters.class_limit)?.classes,
        );
        let mut agent = Agent::new(config_path, layout.clone(), dataplane, loaded, ledger);
        agent.map_set = state.map_set;
        agent.sequence = state.sequence;
        agent.interfaces = interfaces;
        agent.observation = observation;
        agent.logging = logging;
        agent.commit_state()?;
        Ok(agent)
    }

    /// Builds fresh maps, writes the whole image, then attaches, replacing
    /// the program of any pinned link in one step.
    fn replace(config_path: &Path, layout: PinLayout, logging: bool) -> Result<Agent> {
        let previous = layout.read_state();
        let loaded = load(config_path, &Registry::default())?;
        let map_set = previous.as_ref().map_or(1, |state| state.map_set + 1);
        let log_slots = previous
            .as_ref()
            .map_or_else(LogSlots::default, |state| state.counters.log_slots.clone());
        let observation = Observation::new(&loaded.compiled, &loaded.config, &log_slots, logging);
        let carried = previous
            .as_ref()
            .and_then(|state| counts_of_replaced_maps(&layout, state));
        let (dataplane, interfaces) =
            build_dataplane(&loaded, &layout, map_set, previous.as_ref(), &observation)?;
        layout.remove_map_sets(Some(map_set));
        let slots = slot_names(&loaded.config);
        let baseline = dataplane.snapshot(loaded.compiled.verdicts.len())?.classes;
        let ledger = match carried {
            Some((mut ledger, rules, old)) => {
                ledger.replace_maps(&rules, &old, slots, baseline);
                ledger
            }
            None => Ledger::new(slots, baseline),
        };
        let mut agent = Agent::new(config_path, layout, dataplane, loaded, ledger);
        agent.map_set = map_set;
        agent.sequence = previous.map_or(0, |state| state.sequence);
        agent.interfaces = interfaces;
        agent.observation = observation;
        agent.logging = logging;
        agent.commit_state()?;
        Ok(agent)
    }

    fn new(
        config_path: &Path,
        layout: PinLayout,
        dataplane: Dataplane,
        current: Loaded,
        ledger: Ledger,
    ) -> Agent {
        let now = Timestamp::now();
        let feed_loads = current
            .feeds
            .iter()
            .map(|feed| (feed.name.clone(), now))
            .collect();
        Agent {
            config_path: config_path.to_owned(),
            layout,
            dataplane,
            current,
            map_set: 0,
            sequence: 0,
            interfaces: Vec::new(),
            ledger,
            observation: Observation::default(),
            logging: false,
            events: None,
            reload_failures: 0,
            feed_loads,
            dirty: false,
        }
    }

    /// Starts reading sampled events into `sink`.
    fn start_events(&mut self, sink: Sink) {
        let Some(ring) = self.dataplane.take_events() else {
            tracing::warn!("the events ring buffer is already taken; no events will be written");
            return;
        };
        let decoder = Decoder::new(
            self.observation.rules.clone(),
            interface_indexes(&self.current.config),
        );
        match crate::events::spawn_reader(ring, decoder, sink) {
            Ok(updates) => self.events = Some(updates),
            Err(error) => {
                tracing::warn!(error = crate::cli::error_text(&error), "cannot read events")
            }
        }
    }

    /// Tells the event reader about new rule names, and a new ring buffer
    /// after the maps were replaced.
    fn update_events(&mut self, new_maps: bool) {
        let Some(updates) = &self.events else {
            return;
        };
        if new_maps && let Some(ring) = self.dataplane.take_events() {
            let _ = updates.send(crate::events::ReaderUpdate::Ring(ring));
        }
        let decoder = Decoder::new(
            self.observation.rules.clone(),
            interface_indexes(&self.current.config),
        );
        let _ = updates.send(crate::events::ReaderUpdate::Decoder(decoder));
    }

    /// Everything counted so far.
    fn counter_report(&self) -> Result<CounterReport> {
        let snapshot = self
            .dataplane
            .snapshot(self.current.compiled.registry.class_id_limit())?;
        Ok(self
            .ledger
            .report(&rule_matches(&self.current.compiled), &snapshot))
    }

    fn metrics_text(&self) -> String {
        let report = match self.counter_report() {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(
                    error = crate::cli::error_text(&error),
                    "cannot read the counters for metrics"
                );
                CounterReport::default()
            }
        };
        let capacity = self.dataplane.capacity();
        let image = &self.current.compiled.image;
        metrics::render(&MetricsInput {
            report: &report,
            feeds: &self.current.feeds,
            feed_loads: &self.feed_loads,
            rules: &self.current.compiled.rules,
            selected: &self.current.compiled.selected,
            reload_failures: self.reload_failures,
            maps: &[
                ("hosts_v4", image.hosts_v4.len(), capacity.hosts_v4),
                ("hosts_v6", image.hosts_v6.len(), capacity.hosts_v6),
                ("prefixes_v4", image.prefixes_v4.len(), capacity.prefixes_v4),
                ("prefixes_v6", image.prefixes_v6.len(), capacity.prefixes_v6),
            ],
            classes: self.current.compiled.registry.class_count(),
        })
    }

    /// Records the enforced state in the state file, then the matching
    /// sequence number in the CONTROL map.
    fn commit_state(&mut self) -> Result<()> {
        self.sequence += 1;
        let sequence = (self.sequence % u64::from(u32::MAX)).max(1);
        self.sequence = sequence;
        let state = PinnedState {
            version: pin::FORMAT_VERSION,
            fingerprint: pin::fingerprint(&self.current.config.text),
            map_set: self.map_set,
            capacity: self.dataplane.actual_capacity()?.into(),
            sequence,
            registry: self.current.compiled.registry.clone(),
            interfaces: self.interfaces.clone(),
            counters: self.ledger.to_state(
                rule_matches(&self.current.compiled),
                self.current.compiled.registry.class_id_limit(),
                self.observation.slots.clone(),
            ),
            indicators: Some(self.current.intel.indicator_count() as u64),
            feeds: self.pinned_feeds(),
        };
        self.layout.write_state(&state)?;
        self.dataplane.set_sequence(sequence as u32)?;
        Ok(())
    }

    /// Returns the enforced feeds with their indicator counts and load times.
    fn pinned_feeds(&self) -> Vec<PinnedFeed> {
        self.current
            .feeds
            .iter()
            .map(|feed| PinnedFeed {
                name: feed.name.clone(),
                indicators: feed.indicators,
                last_loaded: self.feed_loads.get(&feed.name).copied(),
            })
            .collect()
    }

    /// Compiles again and applies the result; on any failure the last good
    /// state stays enforced.
    fn recompile(&mut self, trigger: &Trigger) {
        let started = Instant::now();
        let result = match trigger {
            Trigger::Expiry => self
                .recompile_same_intel()
                .map(|next| next.map(|compiled| Next::Compiled(Box::new(compiled)))),
            // SIGHUP reads every feed again, for an operator who wants no
            // doubt about what is loaded. Other triggers read only feeds
            // whose file or settings changed.
            Trigger::Hangup => load(&self.config_path, &self.current.compiled.registry)
                .map(|next| Some(Next::Loaded(Box::new(next)))),
            Trigger::FileChanged(_) | Trigger::Refresh => reload(&self.config_path, &self.current)
                .map(|next| Some(Next::Loaded(Box::new(next)))),
        };
        let next = match result {
            Ok(Some(next)) => next,
            Ok(None) => return,
            Err(error) => {
                self.reload_failures += 1;
                tracing::error!(
                    %trigger,
                    error = crate::cli::error_text(&error),
                    "reload failed; the last good state stays enforced"
                );
                return;
            }
        };
        if let Next::Loaded(loaded) = &next {
            self.note_feed_loads(loaded);
            warn_interface_change(&self.current, loaded);
        }
        let inputs_unchanged = same_inputs(&self.current, &next);
        let removed = match &next {
            Next::Loaded(loaded) => pipeline::removed_feeds(&self.current, loaded),
            Next::Compiled(_) => Vec::new(),
        };
        if let Next::Loaded(loaded) = &next {
            log_allowlist_changes(&self.current.protected, &loaded.protected);
        }
        match self.install(next) {
            Ok(installed) => {
                self.forget_removed_feeds(&removed);
                log_reload(trigger, installed, inputs_unchanged, started.elapsed());
            }
            Err(error) => {
                self.reload_failures += 1;
                tracing::error!(
                    %trigger,
                    error = crate::cli::error_text(&error),
                    "applying the new state failed; the last good state stays enforced"
                );
            }
        }
    }

    /// Records when each feed of `loaded` last loaded, and counts the feeds
    /// that failed. A feed kept unchanged counts as loaded, but one that
    /// failed and kept its last good load does not.
    fn note_feed_loads(&mut self, loaded: &Loaded) {
        let now = Timestamp::now();
        for feed in loaded.feeds.iter().filter(|feed| {
            loaded
                .failed_feeds
                .iter()
                .all(|(name, _)| *name != feed.name)
        }) {
            self.feed_loads.insert(feed.name.clone(), now);
        }
        self.reload_failures += loaded.failed_feeds.len() as u64;
    }

    /// Logs each feed that left the config with the indicators it had, and
    /// stops reporting its load time.
    fn forget_removed_feeds(&mut self, removed: &[(String, u64)]) {
        for (feed, indicators) in removed {
            tracing::info!(
                %feed,
                indicators,
                "feed removed from the config; rules no longer see its indicators"
            );
            self.feed_loads.remove(feed);
        }
    }

    /// Evaluates time-dependent predicates again over the loaded intel;
    /// `None` when nothing changed.
    fn recompile_same_intel(&self) -> Result<Option<Compiled>> {
        let compiled = &self.current.compiled;
        let time_dependent = compiled
            .predicates
            .iter()
            .flatten()
            .any(|p| p.depends_on_time());
        if !time_dependent {
            return Ok(None);
        }
        let next = compile::compile(
            compiled.rules.clone(),
            &self.current.intel,
            now(),
            &compiled.registry,
        )?;
        if next.image == compiled.image && next.class_bits == compiled.class_bits {
            return Ok(None);
        }
        report_expiry(compiled, &next);
        Ok(Some(next))
    }

    /// Makes `next` the enforced state: writes the difference into the
    /// maps, or nothing when they already enforce it, or a new map set.
    fn install(&mut self, next: Next) -> Result<Installed> {
        let snapshot = self
            .dataplane
            .snapshot(self.current.compiled.registry.class_id_limit())?;
        self.ledger
            .settle(&rule_matches(&self.current.compiled), &snapshot.classes);
        let config = match &next {
            Next::Loaded(loaded) => &loaded.config,
            Next::Compiled(_) => &self.current.config,
        };
        let observation = Observation::new(
            next.compiled(),
            config,
            &self.observation.slots,
            self.logging,
        );
        for rule in &observation.unlogged {
            tracing::warn!(rule = %rule, "more than 32 rules log; this one sends no events");
        }
        if self.dirty {
            self.observation = observation;
            return self.rebuild(next).map(|()| Installed::Rebuilt);
        }
        if self.enforces_same(next.compiled(), &observation) {
            // The state file must still record the new config's fingerprint
            // and the feeds' load times.
            self.set_current(next);
            self.observation = observation;
            self.commit_state()?;
            return Ok(Installed::Unchanged);
        }
        self.dataplane.set_sequence(0)?;
        self.dataplane.set_log_rules(&observation.settings)?;
        match self.dataplane.apply_with(
            self.current.compiled.enforced(),
            next.compiled().enforced(),
            observation.extras.clone(),
        ) {
            Ok(stats) => {
                tracing::debug!(
                    temporary_classes = stats.transitional,
                    "changed entries passed through temporary class ids, so that every address switched verdict at one instant"
                );
                self.set_current(next);
                self.observation = observation;
                self.update_events(false);
                self.commit_state()?;
                Ok(Installed::Updated(stats))
            }
            Err(DataplaneError::Capacity {
                map,
                needed,
                capacity,
            }) => {
                tracing::info!(
                    map,
                    needed,
                    capacity,
                    "maps too small for the update; building larger ones"
                );
                self.observation = observation;
                self.rebuild(next).map(|()| Installed::Rebuilt)
            }
            Err(DataplaneError::HostTableFull { entries, buckets }) => {
                // New maps draw a new multiplier, which spreads the
                // addresses differently.
                tracing::info!(
                    entries,
                    buckets,
                    "an address found no free slot in the IPv4 host table; building new maps"
                );
                self.observation = observation;
                self.rebuild(next).map(|()| Installed::Rebuilt)
            }
            Err(error) => {
                self.dirty = true;
                Err(error.into())
            }
        }
    }

    /// Returns whether the maps already enforce `next` with `observation`:
    /// the same address entries, class table, rules and log settings.
    fn enforces_same(&self, next: &Compiled, observation: &Observation) -> bool {
        let current = &self.current.compiled;
        current.image.same_entries(&next.image)
            && current.image.classes == next.image.classes
            && same_rules(&current.rules, &next.rules)
            && self.observation.settings == observation.settings
            && self.observation.extras == observation.extras
    }

    fn set_current(&mut self, next: Next) {
        match next {
            Next::Loaded(loaded) => self.current = *loaded,
            Next::Compiled(compiled) => self.current.compiled = *compiled,
        }
    }

    /// Builds a new map set sized for `next` and swaps the program on every
    /// link to one that uses it.
    fn rebuild(&mut self, next: Next) -> Result<()> {
        let old_rules = rule_matches(&self.current.compiled);
        let old_counts = self
            .dataplane
            .snapshot(self.current.compiled.registry.class_id_limit());
        self.set_current(next);
        self.dirty = true;
        let map_set = self.map_set + 1;
        let previous = self.layout.read_state();
        let (dataplane, interfaces) = build_dataplane(
            &self.current,
            &self.layout,
            map_set,
            previous.as_ref(),
            &self.observation,
        )?;
        self.dataplane = dataplane;
        self.layout.remove_map_sets(Some(map_set));
        self.map_set = map_set;
        self.interfaces = interfaces;
        let baseline = self
            .dataplane
            .snapshot(self.current.compiled.verdicts.len())?
            .classes;
        let slots = slot_names(&self.current.config);
        match old_counts {
            Ok(old) => self.ledger.replace_maps(&old_rules, &old, slots, baseline),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot read the old counters; counts restart"
                );
                self.ledger = Ledger::new(slots, baseline);
            }
        }
        self.update_events(true);
        self.dirty = false;
        self.commit_state()
    }

    fn stop(mut self, stop: Stop, json: bool) -> Result<()> {
        let report = self.counter_report()?;
        match stop {
            Stop::Detach => {
                self.dataplane.detach_all().context("cannot detach")?;
                self.layout.remove_map_sets(None);
                self.layout.remove_state();
                self.layout.remove_empty_dirs();
                tracing::info!("SIGINT: detached and removed the pins; protection removed");
            }
            Stop::Leave => tracing::info!(
                pin_dir = %self.layout.root.display(),
                "SIGTERM: protection stays in place; `intelwall detach` removes it"
            ),
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        Ok(())
    }
}

fn load(config_path: &Path, registry: &Registry) -> Result<Loaded> {
    let loaded = pipeline::load_with(config_path, now(), &FetchOptions::default(), registry)?;
    crate::cli::print_diagnostics(&loaded);
    crate::cli::log_loaded(&loaded);
    Ok(loaded)
}

/// Loads again, reading only feeds that changed since `current` loaded. A
/// feed that no longer loads keeps its last good indicators, and is logged.
fn reload(config_path: &Path, current: &Loaded) -> Result<Loaded> {
    let loaded = pipeline::reload(config_path, now(), &FetchOptions::default(), current)?;
    crate::cli::print_diagnostics(&loaded);
    for (feed, error) in &loaded.failed_feeds {
        tracing::error!(
            %feed,
            %error,
            "feed failed to load; its last good indicators stay enforced and the other feeds' changes apply"
        );
    }
    crate::cli::log_loaded(&loaded);
    Ok(loaded)
}

/// Warns when the `[[interface]]` list changed, which a reload does not
/// apply.
fn warn_interface_change(current: &Loaded, next: &Loaded) {
    let names = |config: &Config| {
        config
            .interfaces
            .iter()
            .map(|interface| interface.name.clone())
            .collect::<Vec<_>>()
    };
    if names(&next.config) != names(&current.config) {
        tracing::warn!(
            "the [[interface]] list changed; restart the agent to attach to other interfaces"
        );
    }
}

/// Returns whether `next` was loaded from the same inputs as `current`: the
/// same config text, and every feed kept unread because its file and
/// settings did not change.
fn same_inputs(current: &Loaded, next: &Next) -> bool {
    let Next::Loaded(next) = next else {
        return false;
    };
    next.config.text == current.config.text
        && next.failed_feeds.is_empty()
        && next.reused.len() == next.feeds.len()
}

/// Returns whether two rule lists have the same rules in the same order.
fn same_rules(current: &[compile::RuleSpec], next: &[compile::RuleSpec]) -> bool {
    current.len() == next.len()
        && current.iter().zip(next).all(|(old, new)| {
            old.name == new.name
                && old.source == new.source
                && old.action == new.action
                && old.mark == new.mark
        })
}

/// Logs the outcome of a reload in one line. `inputs_unchanged` separates a
/// reload that found nothing new from one whose new inputs happen to give
/// the same verdicts.
/// Logs the nets that a reload adds to or drops from the safety allowlist.
fn log_allowlist_changes(old: &[crate::safety::SafetyNet], new: &[crate::safety::SafetyNet]) {
    let (added, dropped) = crate::safety::allowlist_changes(old, new);
    for net in added {
        tracing::info!(net = %net, "safety allowlist gained a net; no rule drops it");
    }
    for net in dropped {
        tracing::info!(net = %net, "safety allowlist dropped a net; rules apply to it again");
    }
}

fn log_reload(trigger: &Trigger, installed: Installed, inputs_unchanged: bool, took: Duration) {
    let took_ms = took.as_millis() as u64;
    match installed {
        Installed::Unchanged if inputs_unchanged => {
            tracing::info!(%trigger, "reload: nothing changed")
        }
        Installed::Unchanged => tracing::info!(
            %trigger,
            took_ms,
            "reloaded; the new inputs give the same verdicts, so the maps stay as they are"
        ),
        Installed::Updated(stats) => tracing::info!(
            %trigger,
            entries_written = stats.upserted,
            entries_removed = stats.removed,
            took_ms,
            "reloaded"
        ),
        Installed::Rebuilt => tracing::info!(%trigger, took_ms, "reloaded into a new map set"),
    }
}

/// Loads the program with a new map set pinned under `map_set`, writes the
/// image, and attaches to every configured interface.
fn build_dataplane(
    loaded: &Loaded,
    layout: &PinLayout,
    map_set: u64,
    previous: Option<&PinnedState>,
    observation: &Observation,
) -> Result<(Dataplane, Vec<PinnedInterface>)> {
    let started = Instant::now();
    let maps_dir = layout.maps_dir(map_set);
    // Pins left by an interrupted attempt hold unknown contents.
    let _ = std::fs::remove_dir_all(&maps_dir);
    let image = &loaded.compiled.image;
    let interfaces = loaded.config.interfaces.len() as u32;
    let mut dataplane = Dataplane::load_written(
        Capacity::for_image(image),
        Some(&maps_dir),
        interfaces,
        image,
        observation.extras.clone(),
    )
    .context("cannot load the XDP program and write the compiled intel into its maps")?;
    set_interface_slots(&dataplane, &loaded.config)?;
    dataplane
        .set_log_rules(&observation.settings)
        .context("cannot write the log rules")?;
    tracing::info!(
        entries = image.hosts_v4.len()
            + image.hosts_v6.len()
            + image.prefixes_v4.len()
            + image.prefixes_v6.len(),
        classes = loaded.compiled.registry.class_count(),
        took_ms = started.elapsed().as_millis() as u64,
        "program loaded and maps written"
    );
    let known = previous.map_or(&[][..], |state| state.interfaces.as_slice());
    let interfaces = attach_all(
        &mut dataplane,
        &loaded.config,
        layout,
        known,
        Takeover::Replace,
    )?;
    Ok((dataplane, interfaces))
}

/// Kind of takeover of an already pinned link, by the maps that the new
/// program enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takeover {
    /// The pinned maps and config the link's program already enforced.
    Adopt,
    /// A new map set.
    Replace,
}

/// Returns when an interface's current attachment began, RFC 3339. That is
/// the recorded time when an adopting agent takes over a link that was
/// pinned already, and otherwise `now`, because the link is new or its
/// program now enforces a new map set.
fn attach_time(
    earlier: Option<&PinnedInterface>,
    link_was_pinned: bool,
    takeover: Takeover,
    now: Timestamp,
) -> String {
    match earlier {
        Some(earlier) if link_was_pinned && takeover == Takeover::Adopt => earlier.since.clone(),
        _ => now.to_string(),
    }
}

/// Attaches to every configured interface, or replaces the program of its
/// pinned link; detaches pinned links of interfaces no longer configured.
/// `known` are the interfaces that the state file records.
fn attach_all(
    dataplane: &mut Dataplane,
    config: &Config,
    layout: &PinLayout,
    known: &[PinnedInterface],
    takeover: Takeover,
) -> Result<Vec<PinnedInterface>> {
    let mut interfaces = Vec::new();
    for interface in &config.interfaces {
        let attachment = dataplane
            .attach_pinned(
                &interface.name,
                interface.mode,
                &layout.link(&interface.name),
            )
            .with_context(|| crate::cli::attach_hint(&interface.name, interface.mode))?;
        if let Some(reason) = &attachment.fallback_reason {
            tracing::warn!(interface = %attachment.interface, %reason, "native XDP failed; attached in skb mode");
        }
        let earlier = known.iter().find(|known| known.name == interface.name);
        let link_was_pinned = attachment.mode == "pinned";
        let mode = match (link_was_pinned, earlier) {
            (true, Some(earlier)) => earlier.mode.clone(),
            _ => attachment.mode.to_owned(),
        };
        let since = attach_time(earlier, link_was_pinned, takeover, Timestamp::now());
        match dataplane.attach_tag_pinned(&interface.name, &layout.tag_link(&interface.name)) {
            Ok(_) => {}
            Err(error) => tracing::warn!(
                interface = %interface.name,
                error = format!("{:#}", anyhow::Error::from(error)),
                "tagged packets on this interface get no mark"
            ),
        }
        tracing::info!(interface = %interface.name, %mode, "attached");
        interfaces.push(PinnedInterface {
            name: interface.name.clone(),
            mode,
            since,
        });
    }
    for name in layout.pinned_interfaces() {
        if !config
            .interfaces
            .iter()
            .any(|interface| interface.name == name)
        {
            let _ = crate::dataplane::unpin_link(&layout.link(&name));
            let _ = crate::dataplane::unpin_link(&layout.tag_link(&name));
            tracing::info!(interface = %name, "detached: no longer configured");
        }
    }
    Ok(interfaces)
}

/// Logs how many indicators each rule lost or gained through expiry.
fn report_expiry(before: &Compiled, after: &Compiled) {
    for (index, rule) in after.rules.iter().enumerate() {
        let old = before.selected.get(index).copied().unwrap_or(0);
        let new = after.selected[index];
        if new < old {
            tracing::info!(rule = %rule.name, aged_out = old - new, selected = new, "indicators aged out of the rule");
        } else if new > old {
            tracing::info!(rule = %rule.name, entered = new - old, selected = new, "indicators entered the rule");
        }
    }
}

/// Watches the config file and every local feed file; sends a trigger on
/// any change. Editors often replace a file through a rename, so the
/// directories are watched and events filtered by path.
fn watch_files(
    config: &Config,
    triggers: mpsc::Sender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};

    let mut paths: Vec<PathBuf> = vec![config.path.clone()];
    paths.extend(
        config
            .feeds
            .iter()
            .filter(|feed| feed.url.is_none())
            .map(|feed| feed.path.clone()),
    );
    let paths: Vec<PathBuf> = paths.iter().map(|path| absolute(path)).collect();
    let watched = paths.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        let changed: Vec<PathBuf> = event
            .paths
            .iter()
            .map(|path| absolute(path))
            .filter(|path| watched.contains(path))
            .collect();
        if !changed.is_empty() {
            // A full queue already contains a reload, so dropping this
            // trigger loses only the paths it names.
            let _ = triggers.try_send(Trigger::FileChanged(changed));
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch files; reload with SIGHUP");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .filter_map(|path| path.parent().map(Path::to_owned))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch directory; reload with SIGHUP");
        }
    }
    Some(watcher)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Starts the expiry timer and, when any feed has a `url` and `refresh`, the
/// refresh timer.
fn spawn_timers(loaded: &Loaded, triggers: mpsc::Sender<Trigger>) {
    let expiry = loaded.config.agent.expiry_interval;
    let expiry_triggers = triggers.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(expiry);
        interval.tick().await;
        loop {
            interval.tick().await;
            if expiry_triggers.send(Trigger::Expiry).await.is_err() {
                return;
            }
        }
    });
    let refresh = loaded
        .config
        .feeds
        .iter()
        .filter(|feed| feed.url.is_some())
        .filter_map(|feed| feed.refresh)
        .min();
    if let Some(refresh) = refresh {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(refresh);
            interval.tick().await;
            loop {
                interval.tick().await;
                if triggers.send(Trigger::Refresh).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Counter slot names: [`OTHER_INTERFACE`], then the configured interfaces
/// in order.
fn slot_names(config: &Config) -> Vec<String> {
    std::iter::once(OTHER_INTERFACE.to_owned())
        .chain(
            config
                .interfaces
                .iter()
                .map(|interface| interface.name.clone()),
        )
        .collect()
}

/// The ifindex of every configured interface that exists.
fn interface_indexes(config: &Config) -> BTreeMap<u32, String> {
    config
        .interfaces
        .iter()
        .filter_map(|interface| {
            let name = std::ffi::CString::new(interface.name.as_str()).ok()?;
            // SAFETY: name is a valid NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            (index != 0).then(|| (index, interface.name.clone()))
        })
        .collect()
}

/// Gives every configured interface its counter slot (1 and up).
fn set_interface_slots(dataplane: &Dataplane, config: &Config) -> Result<()> {
    let indexes = interface_indexes(config);
    let slots: Vec<(u32, u32)> = config
        .interfaces
        .iter()
        .enumerate()
        .filter_map(|(position, interface)| {
            let (index, _) = indexes.iter().find(|(_, name)| **name == interface.name)?;
            Some((*index, position as u32 + 1))
        })
        .collect();
    let collided = dataplane
        .set_interface_slots(&slots)
        .context("cannot write the interface table")?;
    for ifindex in collided {
        let name = indexes.get(&ifindex).cloned().unwrap_or_default();
        tracing::warn!(
            interface = %name,
            ifindex,
            "interface index collides with another configured one; its counts show under \"other\""
        );
    }
    Ok(())
}

/// The counts of the maps a previous agent left, settled into its ledger,
/// so that a replacement does not lose them. `None` when they cannot be
/// read (another format, or no maps).
fn counts_of_replaced_maps(
    layout: &PinLayout,
    state: &PinnedState,
) -> Option<(Ledger, Vec<RuleMatches>, crate::dataplane::Snapshot)> {
    if state.version != pin::FORMAT_VERSION {
        return None;
    }
    let maps = PinnedCounterMaps::open(&layout.maps_dir(state.map_set)).ok()?;
    let snapshot = maps.counters().snapshot(state.counters.class_limit).ok()?;
    Some((
        Ledger::from_state(&state.counters),
        state.counters.rules.clone(),
        snapshot,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(paths: &[&str]) -> Trigger {
        Trigger::FileChanged(paths.iter().map(PathBuf::from).collect())
    }

    #[test]
    fn trigger_merge_keeps_wider_trigger() {
        // (first, later, merged)
        let cases = [
            (
                changed(&["/a"]),
                changed(&["/b", "/a"]),
                changed(&["/a", "/b"]),
            ),
            (Trigger::Expiry, changed(&["/a"]), changed(&["/a"])),
            (changed(&["/a"]), Trigger::Refresh, changed(&["/a"])),
            (Trigger::Expiry, Trigger::Refresh, Trigger::Refresh),
            (Trigger::Refresh, Trigger::Expiry, Trigger::Refresh),
            (Trigger::Expiry, Trigger::Expiry, Trigger::Expiry),
            (changed(&["/a"]), Trigger::Hangup, Trigger::Hangup),
        ];
        for (first, later, merged) in cases {
            let description = format!("{first} then {later}");
            assert_eq!(first.merge(later), merged, "{description}");
        }
    }

    #[test]
    fn trigger_names_changed_paths() {
        assert_eq!(
            changed(&["/etc/intelwall/drop.txt", "/etc/intelwall/intelwall.toml"]).to_string(),
            "file changed: /etc/intelwall/drop.txt, /etc/intelwall/intelwall.toml"
        );
        assert_eq!(Trigger::Hangup.to_string(), "SIGHUP");
    }

    /// Writes a config with one list feed, `drop.txt`, and returns the
    /// config's path.
    fn write_feed_config(dir: &Path) -> PathBuf {
        std::fs::write(dir.join("drop.txt"), "192.0.2.1\n").unwrap();
        let config = dir.join("intelwall.toml");
        std::fs::write(
            &config,
            "[safety]\nenabled = false\n\n[[feed]]\nname = \"drop\"\npath = \"drop.txt\"\n",
        )
        .unwrap();
        config
    }

    #[test]
    fn watcher_names_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&write_feed_config(dir.path())).unwrap();
        let (sender, mut triggers) = mpsc::channel(16);
        let _watcher = watch_files(&config, sender).expect("inotify works here");

        let feed = dir.path().join("drop.txt");
        std::fs::write(&feed, "192.0.2.2\n").unwrap();

        let trigger = triggers
            .blocking_recv()
            .expect("the watcher sends a trigger");
        assert_eq!(trigger, Trigger::FileChanged(vec![absolute(&feed)]));
    }

    #[test]
    fn same_inputs_only_when_nothing_reread() {
        let dir = tempfile::tempdir().unwrap();
        let config = write_feed_config(dir.path());
        let now = "2026-12-04T00:00:00Z".parse().unwrap();
        let fetch = FetchOptions::default();
        let first = pipeline::load(&config, now).unwrap();

        let again = pipeline::reload(&config, now, &fetch, &first).unwrap();
        assert!(same_inputs(&first, &Next::Loaded(Box::new(again))));

        // A rewritten feed is read again, although it lists the same address.
        std::fs::write(dir.path().join("drop.txt"), "192.0.2.1\n\n").unwrap();
        let reread = pipeline::reload(&config, now, &fetch, &first).unwrap();
        assert!(!same_inputs(&first, &Next::Loaded(Box::new(reread))));

        let comment = format!("# edited\n{}", std::fs::read_to_string(&config).unwrap());
        std::fs::write(&config, comment).unwrap();
        let edited = pipeline::reload(&config, now, &fetch, &first).unwrap();
        assert!(!same_inputs(&first, &Next::Loaded(Box::new(edited))));
    }

    const RECORDED: &str = "2026-01-02T03:04:05Z";
    const NOW: &str = "2026-06-07T08:09:10Z";

    #[test]
    fn attach_time_follows_attachment() {
        let earlier = PinnedInterface {
            name: "veth0".to_owned(),
            mode: "native".to_owned(),
            since: RECORDED.to_owned(),
        };
        let earlier = Some(&earlier);
        // (recorded interface, link pinned before, takeover, expected time)
        let cases = [
            (earlier, true, Takeover::Adopt, RECORDED),
            (earlier, false, Takeover::Adopt, NOW),
            (earlier, true, Takeover::Replace, NOW),
            (None, true, Takeover::Adopt, NOW),
            (None, false, Takeover::Replace, NOW),
        ];
        for (earlier, link_was_pinned, takeover, expected) in cases {
            let time = attach_time(earlier, link_was_pinned, takeover, NOW.parse().unwrap());
            assert_eq!(
                time,
                expected,
                "recorded: {}, pinned: {link_was_pinned}, {takeover:?}",
                earlier.is_some()
            );
        }
    }
}
