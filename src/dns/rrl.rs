//! Response-rate limiting (RRL) of UDP answers, after BIND's `rate-limit`: answers to one
//! client prefix (a /24 or /56 by default) are limited to `responses_per_second`, so the
//! server cannot be used to flood a victim whose address is spoofed as the source of
//! queries. A limited answer is dropped, or every `slip`-th one is "slipped": sent as an
//! empty response with TC set, so a real client behind the prefix retries over TCP (which
//! cannot be spoofed and is never limited).
//!
//! Differences from BIND, because the check runs before the answer is built (a flood costs
//! a parse and a table lookup, nothing more):
//! - accounts are per client prefix only, not per prefix and identical response (BIND
//!   also keys by qname/qtype, and NXDOMAINs by zone): the limit is on all answers to
//!   the prefix;
//! - a token bucket: a prefix that was quiet may get `window` seconds' worth of answers at
//!   once, then `responses_per_second`; limited answers cost nothing. (BIND's window
//!   is instead how far an account may go into debt: there, a client that keeps
//!   exceeding the rate gets no answers at all.)
//!
//! The table is fixed-size (set-associative, [`TABLE_ENTRIES`] accounts in shards behind
//! their own mutex, held for a few comparisons): a flood from spoofed sources evicts the
//! accounts closest to a full bucket, never grows memory.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::config::RrlConfig;

const SHARDS: usize = 16;
const SETS_PER_SHARD: usize = 512;
const WAYS: usize = 4;
/// Client prefixes tracked at once.
pub const TABLE_ENTRIES: usize = SHARDS * SETS_PER_SHARD * WAYS;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// What to do with the answer to one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Send nothing.
    Drop,
    /// Send an empty response with TC set.
    Slip,
}

/// One client prefix's account.
#[derive(Debug, Clone, Copy, Default)]
struct Account {
    prefix: u128,
    /// Theoretical arrival time (GCRA), in nanoseconds since the limiter started: the
    /// bucket is full when it is not after now, and each answer moves it one interval on.
    tat: u64,
    /// Limited answers since the bucket was last full (for the slip count).
    limited: u32,
}

pub struct Rrl {
    /// Nanoseconds of credit one answer costs (1 s / rate).
    interval: u64,
    /// Nanoseconds of credit a full bucket holds (the window).
    burst: u64,
    slip: u32,
    v4_mask: u32,
    v6_mask: u128,
    hasher: RandomState,
    start: Instant,
    shards: Box<[Mutex<Box<[Account]>>]>,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("interval_ns", &self.interval)
            .field("burst_ns", &self.burst)
            .field("slip", &self.slip)
            .finish_non_exhaustive()
    }
}

impl Rrl {
    /// The limiter, or None when `responses_per_second` is 0 (off).
    pub fn new(settings: RrlConfig) -> Option<Rrl> {
        if settings.responses_per_second == 0 {
            return None;
        }
        let interval = (NANOS_PER_SEC / u64::from(settings.responses_per_second)).max(1);
        let burst = u64::try_from(settings.window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(interval);
        let v4_len = u32::from(settings.ipv4_prefix_length.min(32));
        let v6_len = u32::from(settings.ipv6_prefix_length.min(128));
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(vec![Account::default(); SETS_PER_SHARD * WAYS].into_boxed_slice()))
            .collect();
        Some(Rrl {
            interval,
            burst,
            slip: settings.slip,
            v4_mask: u32::MAX.checked_shl(32 - v4_len).unwrap_or(0),
            v6_mask: u128::MAX.checked_shl(128 - v6_len).unwrap_or(0),
            hasher: RandomState::new(),
            start: Instant::now(),
            shards,
        })
    }

    /// Counts one answer to `client` now.
    pub fn check(&self, client: IpAddr) -> Verdict {
        self.check_at(client, Instant::now())
    }

    /// Counts one answer to `client` at `now`.
    pub fn check_at(&self, client: IpAddr, now: Instant) -> Verdict {
        let now =
            u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let prefix = self.prefix(client);
        let hash = self.hasher.hash_one(prefix);
        let Some(shard) = self.shards.get(hash as usize % SHARDS) else {
            return Verdict::Answer;
        };
        let set = ((hash >> 32) as usize % SETS_PER_SHARD) * WAYS;
        let mut table = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ways) = table.get_mut(set..set + WAYS) else {
            return Verdict::Answer;
        };
        let account = match ways.iter().position(|a| a.prefix == prefix) {
            Some(i) => &mut ways[i],
            None => {
                // The account nearest to a full bucket loses least by being forgotten.
                let Some(oldest) = ways.iter_mut().min_by_key(|a| a.tat) else {
                    return Verdict::Answer;
                };
                *oldest = Account {
                    prefix,
                    tat: 0,
                    limited: 0,
                };
                oldest
            }
        };
        if account.tat <= now {
            account.tat = now;
            account.limited = 0;
        }
        let after = account.tat.saturating_add(self.interval);
        if after - now <= self.burst {
            account.tat = after;
            return Verdict::Answer;
        }
        account.limited = account.limited.wrapping_add(1);
        if self.slip != 0 && account.limited % self.slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// The account key: the client's prefix, IPv4 (also IPv4-mapped IPv6) in the
    /// `::ffff:0:0/96` range so the two families never share an account.
    fn prefix(&self, client: IpAddr) -> u128 {
        match client.to_canonical() {
            IpAddr::V4(ip) => (0xffff_u128 << 32) | u128::from(u32::from(ip) & self.v4_mask),
            IpAddr::V6(ip) => u128::from(ip) & self.v6_mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rrl(rate: u32, window_secs: u64, slip: u32) -> Rrl {
        match Rrl::new(RrlConfig {
            responses_per_second: rate,
            window: Duration::from_secs(window_secs),
            slip,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
        }) {
            Some(r) => r,
            None => panic!("rate {rate} should enable RRL"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        match s.parse() {
            Ok(ip) => ip,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    /// Queries from `client` every `every` for `span`, starting at `start`; the verdicts.
    fn flood(
        r: &Rrl,
        client: IpAddr,
        start: Instant,
        every: Duration,
        span: Duration,
    ) -> Vec<Verdict> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < span {
            out.push(r.check_at(client, start + t));
            t += every;
        }
        out
    }

    fn count(v: &[Verdict], which: Verdict) -> usize {
        v.iter().filter(|&&x| x == which).count()
    }

    #[test]
    fn off_at_zero() {
        let settings = RrlConfig {
            responses_per_second: 0,
            window: Duration::from_secs(5),
            slip: 2,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 56,
        };
        assert!(Rrl::new(settings).is_none());
    }

    #[test]
    fn burst_of_window_then_the_rate() {
        let r = rrl(10, 2, 0);
        let start = r.start;
        // 1000 queries a second for 5 s: 2 s of burst (20) plus 10 a second.
        let v = flood(
            &r,
            ip("192.0.2.1"),
            start,
            Duration::from_millis(1),
            Duration::from_secs(5),
        );
        let answered = count(&v, Verdict::Answer);
        assert!((69..=71).contains(&answered), "{answered}");
        assert_eq!(count(&v, Verdict::Slip), 0, "slip 0 never slips");
        // The first 20 are all answered.
        assert!(v[..20].iter().all(|&x| x == Verdict::Answer));
    }

    #[test]
    fn under_the_rate_nothing_is_limited() {
        let r = rrl(10, 1, 2);
        let v = flood(
            &r,
            ip("192.0.2.1"),
            r.start,
            Duration::from_millis(101),
            Duration::from_secs(30),
        );
        assert_eq!(count(&v, Verdict::Answer), v.len());
    }

    #[test]
    fn slip_ratio() {
        for (slip, slipped_of_100) in [(1, 100), (2, 50), (3, 33), (0, 0)] {
            let r = rrl(1, 1, slip);
            let t = r.start;
            assert_eq!(r.check_at(ip("198.51.100.7"), t), Verdict::Answer);
            let v: Vec<Verdict> = (0..100)
                .map(|_| r.check_at(ip("198.51.100.7"), t))
                .collect();
            assert_eq!(count(&v, Verdict::Slip), slipped_of_100, "slip {slip}");
            assert_eq!(count(&v, Verdict::Answer), 0);
            if slip == 2 {
                assert_eq!(
                    &v[..4],
                    &[Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
                );
            }
        }
    }

    #[test]
    fn accounts_are_per_prefix() {
        let r = rrl(1, 1, 0);
        let t = r.start;
        assert_eq!(r.check_at(ip("10.0.0.1"), t), Verdict::Answer);
        assert_eq!(r.check_at(ip("10.0.0.200"), t), Verdict::Drop, "same /24");
        assert_eq!(
            r.check_at(ip("::ffff:10.0.0.9"), t),
            Verdict::Drop,
            "IPv4-mapped is IPv4"
        );
        assert_eq!(
            r.check_at(ip("10.0.1.1"), t),
            Verdict::Answer,
            "another /24"
        );
        assert_eq!(r.check_at(ip("2001:db8:0:ff::1"), t), Verdict::Answer);
        assert_eq!(
            r.check_at(ip("2001:db8:0:ab::2"), t),
            Verdict::Drop,
            "same /56"
        );
        assert_eq!(
            r.check_at(ip("2001:db8:0:100::1"), t),
            Verdict::Answer,
            "another /56"
        );

        let exact = Rrl::new(RrlConfig {
            responses_per_second: 1,
            window: Duration::from_secs(1),
            slip: 0,
            ipv4_prefix_length: 32,
            ipv6_prefix_length: 128,
        });
        let Some(exact) = exact else {
            panic!("enabled")
        };
        assert_eq!(exact.check_at(ip("127.0.0.1"), t), Verdict::Answer);
        assert_eq!(exact.check_at(ip("127.0.0.2"), t), Verdict::Answer, "/32");
        assert_eq!(exact.check_at(ip("127.0.0.1"), t), Verdict::Drop);
    }

    #[test]
    fn credit_comes_back_after_a_pause() {
        let r = rrl(10, 1, 0);
        let t = r.start;
        let c = ip("192.0.2.1");
        let v: Vec<Verdict> = (0..50).map(|_| r.check_at(c, t)).collect();
        assert_eq!(count(&v, Verdict::Answer), 10);
        let later = t + Duration::from_secs(10);
        let v: Vec<Verdict> = (0..50).map(|_| r.check_at(c, later)).collect();
        assert_eq!(
            count(&v, Verdict::Answer),
            10,
            "a full bucket again, never more"
        );
    }

    #[test]
    fn a_spoofed_flood_stays_within_the_table() {
        let r = rrl(1, 1, 0);
        let t = r.start;
        // 200,000 distinct /24s (six times the table), each limited once.
        for i in 0u32..200_000 {
            let client = IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes());
            assert_eq!(r.check_at(client, t), Verdict::Answer);
            assert_eq!(r.check_at(client, t), Verdict::Drop);
        }
        let entries: usize = r
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        assert_eq!(entries, TABLE_ENTRIES, "fixed size");
        // A client that is not flooding is still answered.
        assert_eq!(r.check_at(ip("192.0.2.1"), t), Verdict::Answer);
    }

    #[test]
    fn quick_timing() {
        // Not a benchmark (see benches/rrl.rs): a gross regression guard only.
        let r = rrl(1000, 1, 2);
        let start = Instant::now();
        let n = 200_000u32;
        for i in 0..n {
            let _ = r.check(IpAddr::from(
                (0x0a00_0000 + ((i % 5000) << 8)).to_be_bytes(),
            ));
        }
        let per = start.elapsed() / n;
        assert!(per < Duration::from_micros(20), "{per:?} per check");
    }
}
