//! Per-client-address limits on the routes anyone can call without a key (sign-up, login,
//! verification links, sessions).
//!
//! Hand-rolled rather than `governor`: governor's keyed limiter grows with every new key until
//! someone calls `retain_recent`, and what to do when the table is full is the part that
//! matters here. This is a token bucket per client, in a table of fixed size: when it is full,
//! clients whose bucket has refilled are forgotten (they lose nothing), and if it is still full
//! (more than [`MAX_CLIENTS`] clients active at once) the newcomers share one overflow bucket,
//! so memory stays bounded and the limit stays a limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Clients tracked at once per class (a bucket is a few dozen bytes).
pub const MAX_CLIENTS: usize = 65_536;

/// What an unauthenticated request costs: mails are dearer than lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// Sign-up and login: each may send a mail and write a token.
    Mail,
    /// Verification links and session lookups: a database read or a one-time write.
    Lookup,
}

/// Settings: requests per client address. Production defaults; tests raise them.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimitConfig {
    /// Sign-up and login requests per client per hour (also the burst).
    pub mails_per_hour: u32,
    /// Verification and session requests per client per minute (also the burst).
    pub lookups_per_minute: u32,
}

impl Default for ClientLimitConfig {
    fn default() -> Self {
        ClientLimitConfig {
            mails_per_hour: 30,
            lookups_per_minute: 60,
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Table {
    /// Bucket size, and tokens added per second.
    burst: f64,
    rate: f64,
    clients: HashMap<IpAddr, Bucket>,
    overflow: Bucket,
}

impl Table {
    fn new(per: u32, period_secs: f64, now: Instant) -> Table {
        let burst = f64::from(per.max(1));
        Table {
            burst,
            rate: burst / period_secs,
            clients: HashMap::new(),
            overflow: Bucket {
                tokens: burst,
                at: now,
            },
        }
    }

    /// Takes one token for `client`; on refusal, the seconds until the next one.
    fn take(&mut self, client: IpAddr, now: Instant) -> Result<(), u64> {
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_CLIENTS {
            let (burst, rate) = (self.burst, self.rate);
            self.clients.retain(|_, b| {
                let dt = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + dt * rate < burst
            });
        }
        let full = Bucket {
            tokens: self.burst,
            at: now,
        };
        let slot = if self.clients.len() < MAX_CLIENTS || self.clients.contains_key(&client) {
            self.clients.entry(client).or_insert(full)
        } else {
            &mut self.overflow
        };
        let dt = now.saturating_duration_since(slot.at).as_secs_f64();
        slot.tokens = (slot.tokens + dt * self.rate).min(self.burst);
        slot.at = now;
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - slot.tokens) / self.rate).ceil();
        Err((wait as u64).max(1))
    }
}

/// The per-client tables, one per [`RouteClass`].
pub struct ClientLimiter {
    cfg: ClientLimitConfig,
    mail: Mutex<Table>,
    lookup: Mutex<Table>,
}

/// The key a client is counted under: an IPv4 address, or the /64 of an IPv6 one (one host
/// usually holds a whole /64, so counting single IPv6 addresses would limit nothing).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl ClientLimiter {
    pub fn new(cfg: ClientLimitConfig) -> ClientLimiter {
        let now = Instant::now();
        ClientLimiter {
            cfg,
            mail: Mutex::new(Table::new(cfg.mails_per_hour, 3600.0, now)),
            lookup: Mutex::new(Table::new(cfg.lookups_per_minute, 60.0, now)),
        }
    }

    /// The configured number of requests of `class` per period (for `X-RateLimit-Limit`).
    pub fn limit(&self, class: RouteClass) -> u64 {
        u64::from(match class {
            RouteClass::Mail => self.cfg.mails_per_hour,
            RouteClass::Lookup => self.cfg.lookups_per_minute,
        })
    }

    /// Charges one request of `class` to `client`; `Err(seconds)` to wait when refused.
    pub fn check(&self, client: IpAddr, class: RouteClass) -> Result<(), u64> {
        let table = match class {
            RouteClass::Mail => &self.mail,
            RouteClass::Lookup => &self.lookup,
        };
        let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
        table.take(client_key(client), Instant::now())
    }

    #[cfg(test)]
    fn tracked(&self, class: RouteClass) -> usize {
        match class {
            RouteClass::Mail => self.mail.lock().unwrap().clients.len(),
            RouteClass::Lookup => self.lookup.lock().unwrap().clients.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    #[test]
    fn a_client_gets_its_burst_then_waits_others_are_unaffected() {
        let mut t = Table::new(3, 60.0, Instant::now());
        let now = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        for _ in 0..3 {
            assert_eq!(t.take(a, now), Ok(()));
        }
        assert_eq!(t.take(a, now), Err(20), "one token per 20 s");
        assert_eq!(t.take(b, now), Ok(()));
        assert_eq!(t.take(a, now + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded_and_still_limits_when_full() {
        let mut t = Table::new(2, 3600.0, Instant::now());
        let now = Instant::now();
        let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..MAX_CLIENTS as u32 {
            assert_eq!(t.take(ip(i), now), Ok(()));
        }
        // Every tracked client has a spent token: nobody can be forgotten, so newcomers share
        // the overflow bucket (2 tokens), and the table does not grow.
        let extra: Vec<_> = (0..10).map(|i| t.take(ip(1_000_000 + i), now)).collect();
        assert_eq!(extra.iter().filter(|r| r.is_ok()).count(), 2, "{extra:?}");
        assert_eq!(t.clients.len(), MAX_CLIENTS);
        // An hour later every bucket is full again: they are forgotten to make room.
        let later = now + Duration::from_secs(3600);
        assert_eq!(t.take(ip(2_000_000), later), Ok(()));
        assert_eq!(t.clients.len(), 1);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let l = ClientLimiter::new(ClientLimitConfig {
            mails_per_hour: 2,
            lookups_per_minute: 1,
        });
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(l.check(a.into(), RouteClass::Mail).is_ok());
        assert!(l.check(b.into(), RouteClass::Mail).is_ok());
        assert!(l.check(a.into(), RouteClass::Mail).is_err(), "same /64");
        assert!(
            l.check(a.into(), RouteClass::Lookup).is_ok(),
            "classes apart"
        );
        assert_eq!(l.tracked(RouteClass::Mail), 1);
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_key(mapped.into()),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
        );
    }
}
