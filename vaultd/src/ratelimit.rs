//! Token-bucket rate limits, one bucket per (agent, capability).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::policy::RateLimit;

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

/// All buckets. Survives policy changes; a bucket whose limit changed restarts full.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl Limiter {
    /// Takes one token, or says how long until one is available.
    pub fn take(
        &self,
        agent: &str,
        capability: &str,
        limit: RateLimit,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let key = (agent.to_string(), capability.to_string());
        let b = buckets.entry(key).or_insert(Bucket {
            limit,
            tokens: f64::from(limit.count),
            last: now,
        });
        if b.limit != limit {
            *b = Bucket {
                limit,
                tokens: f64::from(limit.count),
                last: now,
            };
        }
        let rate = f64::from(limit.count) / limit.per.as_secs_f64();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(f64::from(limit.count));
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    /// Forgets an agent's buckets (agent removed).
    pub fn forget_agent(&self, agent: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(a, _), _| a != agent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_in_virtual_time() {
        let l = Limiter::default();
        let lim = RateLimit {
            count: 3,
            per: Duration::from_secs(3),
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take("a", "c", lim, t0).unwrap();
        }
        let wait = l.take("a", "c", lim, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Other agents have their own bucket.
        l.take("b", "c", lim, t0).unwrap();
        l.take("a", "c", lim, t0 + Duration::from_secs(1)).unwrap();
        assert!(l.take("a", "c", lim, t0 + Duration::from_secs(1)).is_err());
    }
}
