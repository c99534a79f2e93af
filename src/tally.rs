//! What the status page says about traffic, kept apart from the Prometheus series because an
//! operator without Prometheus needs answers the series cannot give by themselves: each route's
//! requests by status class, its latency over the last five minutes (p50/p95) and the last error
//! of its upstream; each client's requests and refusals. Kept by name for the life of the
//! process, so a reload keeps the figures of the routes and clients it keeps. Recording is a
//! few atomic additions per request, no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// One-minute slots of the latency window: the current minute and the five before it, so that
/// the window always covers the last five minutes.
const SLOTS: usize = 6;
/// Exact buckets below this many microseconds, then [`SUB_BUCKETS`] per power of two.
const LINEAR: u64 = 16;
/// Buckets per power of two above [`LINEAR`]: a value is known within 1/8 (12.5 %).
const SUB_BUCKETS: u64 = 8;
/// Powers of two above [`LINEAR`] µs that have buckets: up to 2^32 µs (71 minutes); longer
/// requests count in the last bucket.
const OCTAVES: u64 = 28;
const BUCKETS: usize = (LINEAR + OCTAVES * SUB_BUCKETS) as usize;

/// Every route's and client's figures, by name.
#[derive(Debug)]
pub struct Tally {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteTally>>>,
    clients: Mutex<HashMap<Arc<str>, Arc<ClientTally>>>,
    /// The start of minute 0 of every latency window.
    epoch: Instant,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            routes: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }
}

impl Tally {
    /// The figures of the route with `prefix`: the same ones before and after a reload.
    pub fn route(&self, prefix: &Arc<str>) -> Arc<RouteTally> {
        let mut routes = lock(&self.routes);
        routes
            .entry(prefix.clone())
            .or_insert_with(|| Arc::new(RouteTally::new(self.epoch)))
            .clone()
    }

    /// The figures of the client `name` (`unknown`: requests no client was recognised for).
    pub fn client(&self, name: &Arc<str>) -> Arc<ClientTally> {
        let mut clients = lock(&self.clients);
        clients.entry(name.clone()).or_default().clone()
    }

    /// Every client with figures, sorted by name, with its requests and refusals.
    pub fn clients(&self) -> Vec<(Arc<str>, u64, u64)> {
        let clients = lock(&self.clients);
        let mut all: Vec<_> = clients
            .iter()
            .map(|(name, t)| {
                let requests = t.requests.load(Ordering::Relaxed);
                (name.clone(), requests, t.denials.load(Ordering::Relaxed))
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A client's figures.
#[derive(Debug, Default)]
pub struct ClientTally {
    requests: AtomicU64,
    denials: AtomicU64,
}

impl ClientTally {
    /// A request of this client ended.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request of this client was refused (401, 403 or its own 429).
    pub fn denial(&self) {
        self.denials.fetch_add(1, Ordering::Relaxed);
    }
}

/// Something that went wrong, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// When it happened.
    pub at: SystemTime,
    /// What happened, as the client was told (never a secret).
    pub message: String,
}

/// A route's figures.
#[derive(Debug)]
pub struct RouteTally {
    /// Requests answered 1xx, 2xx, 3xx, 4xx, 5xx.
    classes: [AtomicU64; 5],
    window: Window,
    last_error: Mutex<Option<Incident>>,
}

/// A route's figures at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteFigures {
    /// Requests answered 1xx .. 5xx.
    pub classes: [u64; 5],
    /// Requests in the last five minutes.
    pub recent: u64,
    /// Median latency of those, in milliseconds (`None` without requests).
    pub p50_ms: Option<f64>,
    /// 95th percentile, in milliseconds.
    pub p95_ms: Option<f64>,
    /// The last upstream failure.
    pub last_error: Option<Incident>,
}

impl RouteTally {
    fn new(epoch: Instant) -> Self {
        RouteTally {
            classes: Default::default(),
            window: Window::new(epoch),
            last_error: Mutex::new(None),
        }
    }

    /// A request on this route ended with `status` after `elapsed`, at `now`.
    pub fn request(&self, status: u16, elapsed: Duration, now: Instant) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.window.record(elapsed, now);
    }

    /// The upstream failed (no answer, or a 5xx): `message` says how.
    pub fn upstream_error(&self, message: String) {
        *lock(&self.last_error) = Some(Incident {
            at: SystemTime::now(),
            message,
        });
    }

    /// The figures as of `now`.
    pub fn figures(&self, now: Instant) -> RouteFigures {
        let counts = self.window.recent(now);
        let recent = counts.iter().map(|&c| u64::from(c)).sum();
        RouteFigures {
            classes: std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed)),
            recent,
            p50_ms: quantile(&counts, recent, 0.50),
            p95_ms: quantile(&counts, recent, 0.95),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

/// Latency counts of the last minutes, one slot per minute. Lock-free: a request adds one to
/// its bucket; the first request of a new minute takes the slot (compare and swap) and empties
/// it, so a request racing that moment may go uncounted: these are figures for people.
#[derive(Debug)]
struct Window {
    epoch: Instant,
    slots: [Slot; SLOTS],
}

/// One minute's latency counts.
#[derive(Debug)]
struct Slot {
    /// The minute (since the window's epoch) it counts; `u64::MAX` before its first.
    minute: AtomicU64,
    counts: Box<[AtomicU32; BUCKETS]>,
}

impl Window {
    fn new(epoch: Instant) -> Self {
        Window {
            epoch,
            slots: std::array::from_fn(|_| Slot {
                minute: AtomicU64::new(u64::MAX),
                counts: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
            }),
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 60
    }

    fn record(&self, elapsed: Duration, now: Instant) {
        let minute = self.minute(now);
        let slot = &self.slots[(minute % SLOTS as u64) as usize];
        let at = slot.minute.load(Ordering::Acquire);
        if at != minute
            && slot
                .minute
                .compare_exchange(at, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in slot.counts.iter() {
                count.store(0, Ordering::Relaxed);
            }
        }
        slot.counts[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of the slots within the window, added up.
    fn recent(&self, now: Instant) -> [u32; BUCKETS] {
        let minute = self.minute(now);
        let mut sum = [0u32; BUCKETS];
        for slot in &self.slots {
            let at = slot.minute.load(Ordering::Acquire);
            if at <= minute && minute - at < SLOTS as u64 {
                for (s, c) in sum.iter_mut().zip(slot.counts.iter()) {
                    *s = s.saturating_add(c.load(Ordering::Relaxed));
                }
            }
        }
        sum
    }
}

/// The bucket of a latency: exact microseconds below [`LINEAR`], then eight per power of two.
fn bucket_of(elapsed: Duration) -> usize {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if micros < LINEAR {
        return micros as usize;
    }
    let octave = u64::from(63 - micros.leading_zeros()) - LINEAR.trailing_zeros() as u64;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = (micros >> (octave + LINEAR.trailing_zeros() as u64 - 3)) & (SUB_BUCKETS - 1);
    (LINEAR + octave * SUB_BUCKETS + sub) as usize
}

/// The middle of a bucket, in milliseconds.
fn bucket_middle_ms(bucket: usize) -> f64 {
    let bucket = bucket as u64;
    if bucket < LINEAR {
        return bucket as f64 / 1000.0;
    }
    let octave = (bucket - LINEAR) / SUB_BUCKETS;
    let sub = (bucket - LINEAR) % SUB_BUCKETS;
    let base = LINEAR << octave;
    let width = base / SUB_BUCKETS;
    (base + sub * width) as f64 / 1000.0 + width as f64 / 2000.0
}

/// The `q` quantile of `total` latencies counted in `counts`, in milliseconds.
fn quantile(counts: &[u32; BUCKETS], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (bucket, &count) in counts.iter().enumerate() {
        seen += u64::from(count);
        if seen >= rank {
            return Some(bucket_middle_ms(bucket));
        }
    }
    None
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_an_eighth() {
        let mut last = 0;
        for micros in [
            0u64, 1, 15, 16, 17, 31, 32, 100, 1_000, 25_000, 1_000_000, 60_000_000,
        ] {
            let bucket = bucket_of(Duration::from_micros(micros));
            assert!(bucket >= last, "{micros} µs went back to bucket {bucket}");
            last = bucket;
            let middle = bucket_middle_ms(bucket) * 1000.0;
            let error = (middle - micros as f64).abs() / (micros.max(1) as f64);
            assert!(
                error <= 0.0625 || micros < 16,
                "{micros} µs shown as {middle}"
            );
        }
        assert_eq!(bucket_of(Duration::from_secs(100_000)), BUCKETS - 1);
    }

    #[test]
    fn percentiles_cover_five_minutes_and_forget_older_ones() {
        let route = Tally::default().route(&Arc::from("/"));
        let start = Instant::now();
        for i in 0..95 {
            route.request(
                200,
                Duration::from_millis(10),
                start + Duration::from_millis(i),
            );
        }
        for _ in 0..5 {
            route.request(502, Duration::from_millis(800), start);
        }
        let now = route.figures(start + Duration::from_secs(60));
        assert_eq!(now.classes, [0, 95, 0, 0, 5]);
        assert_eq!(now.recent, 100);
        let p50 = now.p50_ms.unwrap_or_default();
        assert!((9.0..11.0).contains(&p50), "p50 {p50}");
        let p95 = now.p95_ms.unwrap_or_default();
        assert!(
            (9.0..11.0).contains(&p95),
            "p95 {p95}: the 95th of 100 is still 10 ms"
        );
        let still = route.figures(start + Duration::from_secs(5 * 60));
        assert_eq!(still.recent, 100, "five minutes on, still in the window");
        let later = route.figures(start + Duration::from_secs(6 * 60));
        assert_eq!(later.recent, 0, "older than the window");
        assert_eq!(later.p50_ms, None);
        assert_eq!(later.classes, [0, 95, 0, 0, 5], "the totals stay");
    }

    #[test]
    fn a_reload_keeps_the_figures_of_a_name() {
        let tally = Tally::default();
        let name: Arc<str> = Arc::from("contoso");
        tally.client(&name).request();
        tally.client(&name).denial();
        assert_eq!(tally.clients(), vec![(name, 1, 1)]);
        let prefix: Arc<str> = Arc::from("/a");
        tally.route(&prefix).upstream_error("reset".into());
        let again = tally.route(&prefix).figures(Instant::now());
        assert_eq!(
            again.last_error.map(|e| e.message),
            Some("reset".to_string())
        );
    }
}
