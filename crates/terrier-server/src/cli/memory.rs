//! Giving memory back after a burst. A reconnect storm brings thousands of
//! handshakes at once; their buffers are freed a moment later, but between
//! the sessions that stay, so glibc keeps the freed pages in its heaps for
//! good: 10,000 devices reconnecting left terrierd with three times its
//! steady memory, most of it free (bench `storm`, bench/RESULTS.md).
//! Whenever resident anonymous memory has grown by [`GROWTH_KIB`] since the
//! last look, `malloc_trim` hands free pages back; steady growth (more
//! devices) costs one trim per [`GROWTH_KIB`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often resident memory is read (`/proc/self/status`).
const CHECK_EVERY: Duration = Duration::from_secs(15);

/// Growth of resident anonymous memory that is worth a trim.
const GROWTH_KIB: u64 = 32 * 1024;

/// Trims after bursts until `shutdown`.
pub async fn trim_after_bursts(shutdown: CancellationToken) {
    let Some(mut baseline) = anon_kib() else {
        return; // Not Linux: nothing to read, nothing to trim.
    };
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(now) = anon_kib() else { return };
        if now < baseline.saturating_add(GROWTH_KIB) {
            baseline = baseline.min(now);
            continue;
        }
        // Off the workers: a trim walks every heap under its lock.
        if tokio::task::spawn_blocking(trim).await.is_err() {
            return;
        }
        baseline = anon_kib().unwrap_or(now);
        tracing::debug!(before_kib = now, after_kib = baseline, "gave freed memory back to the system");
    }
}

/// `RssAnon` of this process in KiB; `None` where /proc says nothing.
fn anon_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("RssAnon:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// Returns the free pages of every glibc heap to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and changes only glibc's own
    // heaps, under their locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries (musl) return freed memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_is_read() {
        assert!(super::anon_kib().is_some_and(|kib| kib > 0));
    }
}
