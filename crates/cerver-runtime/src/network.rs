//! The containers engine's network, host side: one /30 per sandbox (from its uid-range slot,
//! which is already unique across every server on the host) and the host firewall
//! (`policy/egress.nft`). The veth pair itself is created by the helper and configured inside
//! by the sandbox's init (`cerver_jail::net`); the kernel removes it with the sandbox.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cerver_jail::protocol::Egress;
use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

/// The firewall, as data.
const RULESET: &str = include_str!("../policy/egress.nft");
/// The destinations no sandbox reaches, as data (replaceable with `EgressSettings::blocklist`).
pub const BUILTIN_BLOCKLIST: &str = include_str!("../policy/blocked4.txt");
/// Set when this host's IPv4 forwarding was off before a Cerver server switched it on: the
/// firewall then also drops every forwarded packet that is not a sandbox's, so that the host
/// routes nothing else than before.
const FORWARDING_MARKER: &str = "/run/cerver/ip_forward_was_off";
const NFT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest list file read (a list is a few hundred bytes; this bounds a mistake).
const MAX_LIST_BYTES: u64 = 1 << 20;

/// The operator's egress settings.
#[derive(Clone, Debug)]
pub struct EgressSettings {
    /// A file replacing the built-in list of blocked destinations (`policy/blocked4.txt`).
    pub blocklist: Option<PathBuf>,
    /// Allow-list mode: a file of the only destinations sandboxes reach (besides resolvers).
    pub allowlist: Option<PathBuf>,
    /// How often the host's networks, resolvers and the list files are re-read.
    pub recheck: Duration,
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            blocklist: None,
            allowlist: None,
            recheck: Duration::from_secs(5),
        }
    }
}

/// Addressing and resolvers for the containers engine's sandboxes.
#[derive(Clone, Debug)]
pub struct EgressPlan {
    subnet: Ipv4Addr,
    /// The host's resolvers, kept current by the watcher.
    nameservers: Arc<RwLock<Vec<Ipv4Addr>>>,
}

impl EgressPlan {
    /// The veth pair of the sandbox holding uid-range `slot`: `subnet + 4*slot` is its /30.
    pub fn for_slot(&self, slot: u32) -> Egress {
        let base = u32::from(self.subnet) + slot * 4;
        Egress {
            host_if: format!("cerv{slot}"),
            gateway: Ipv4Addr::from(base + 1),
            address: Ipv4Addr::from(base + 2),
            prefix_len: 30,
            nameservers: self
                .nameservers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Everything the firewall is rendered from.
#[derive(Debug, PartialEq)]
struct Inputs {
    nameservers: Vec<Ipv4Addr>,
    host_nets: Vec<Ipv4Net>,
    blocked: Vec<Ipv4Net>,
    allowed: Option<Vec<Ipv4Net>>,
}

impl Inputs {
    fn read(settings: &EgressSettings) -> Result<Inputs, String> {
        let blocked = match &settings.blocklist {
            Some(path) => {
                parse_list(&read_list(path)?).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => parse_list(BUILTIN_BLOCKLIST).expect("the built-in blocklist parses"),
        };
        let allowed = match &settings.allowlist {
            Some(path) => Some(
                parse_list(&read_list(path)?).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Inputs {
            nameservers: nameservers(),
            host_nets: host_networks(),
            blocked,
            allowed,
        })
    }
}

fn read_list(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_LIST_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(text)
}

/// A list of IPv4 networks: one CIDR (or bare address) per line, `#` comments.
pub fn parse_list(text: &str) -> Result<Vec<Ipv4Net>, String> {
    let mut nets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let net = entry
            .parse::<Ipv4Net>()
            .or_else(|_| entry.parse::<Ipv4Addr>().map(Ipv4Net::from))
            .map_err(|_| format!("line {}: not an IPv4 network: {entry:?}", n + 1))?;
        nets.push(net.trunc());
    }
    Ok(nets)
}

/// Installs the firewall, switches IPv4 forwarding on and starts re-reading the host's
/// networks and resolvers. Fails (and the containers engine is then unavailable, with this
/// reason) when `nft` is missing, a list file is invalid or the kernel refuses.
pub async fn setup(subnet: Ipv4Addr, settings: &EgressSettings) -> Result<EgressPlan, String> {
    let inputs = Inputs::read(settings)?;
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map_err(|e| format!("read ip_forward: {e}"))?;
    if forwarding.trim() == "0" {
        std::fs::create_dir_all("/run/cerver").map_err(|e| format!("/run/cerver: {e}"))?;
        std::fs::write(FORWARDING_MARKER, "").map_err(|e| format!("{FORWARDING_MARKER}: {e}"))?;
    }
    let guard = std::path::Path::new(FORWARDING_MARKER).exists();
    apply(&render(&inputs, guard)).await?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("enable IPv4 forwarding: {e}"))?;
    let plan = EgressPlan {
        subnet,
        nameservers: Arc::new(RwLock::new(inputs.nameservers.clone())),
    };
    tokio::spawn(watch(
        Arc::downgrade(&plan.nameservers),
        settings.clone(),
        inputs,
        guard,
    ));
    Ok(plan)
}

/// Re-reads the inputs every `settings.recheck` and re-applies the firewall (atomically) when
/// they changed: a network attached or a resolver changed after start is covered within
/// seconds. Polling rather than rtnetlink events: it also covers `/etc/resolv.conf` and the
/// list files, costs two small reads, and needs no socket kept open. Ends with the runtime.
async fn watch(
    nameservers: std::sync::Weak<RwLock<Vec<Ipv4Addr>>>,
    settings: EgressSettings,
    mut applied: Inputs,
    guard: bool,
) {
    let mut tick = tokio::time::interval(settings.recheck);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(nameservers) = nameservers.upgrade() else {
            return;
        };
        let inputs = match Inputs::read(&settings) {
            Ok(inputs) => inputs,
            Err(e) => {
                tracing::warn!("egress settings not re-applied: {e}");
                continue;
            }
        };
        if inputs == applied {
            continue;
        }
        match apply(&render(&inputs, guard)).await {
            Ok(()) => {
                tracing::info!(
                    "host networks, resolvers or egress lists changed: firewall re-applied"
                );
                *nameservers.write().unwrap_or_else(|e| e.into_inner()) =
                    inputs.nameservers.clone();
                applied = inputs;
            }
            Err(e) => tracing::error!("could not re-apply the firewall: {e}"),
        }
    }
}

fn render(inputs: &Inputs, guard: bool) -> String {
    let blocked: Vec<String> = inputs
        .blocked
        .iter()
        .chain(&inputs.host_nets)
        .map(|net| net.to_string())
        .collect();
    let dns = if inputs.nameservers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = inputs.nameservers.iter().map(|ns| ns.to_string()).collect();
        format!(
            "    iifname \"cerv*\" ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
            list.join(", ")
        )
    };
    let allow = match &inputs.allowed {
        None => String::new(),
        Some(list) if list.is_empty() => "    iifname \"cerv*\" drop".to_string(),
        Some(list) => {
            let list: Vec<String> = list.iter().map(|net| net.to_string()).collect();
            format!(
                "    iifname \"cerv*\" ip daddr != {{ {} }} drop",
                list.join(", ")
            )
        }
    };
    let guard = if guard {
        "    iifname != \"cerv*\" oifname != \"cerv*\" drop"
    } else {
        ""
    };
    RULESET
        .replace("@BLOCKED@", &blocked.join(", "))
        .replace("@DNS_RULES@", &dns)
        .replace("@ALLOW_RULES@", &allow)
        .replace("@FORWARD_GUARD@", guard)
}

/// The `nft` program.
pub(crate) fn nft_binary() -> Result<PathBuf, String> {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| crate::find_on_path("nft"))
        .ok_or_else(|| "`nft` not found (install the nftables package)".to_string())
}

/// `nft` is the tool made for this (one atomic transaction from a readable ruleset); the
/// netlink encoding of nftables rules by hand would be far larger and harder to audit.
pub(crate) async fn apply(ruleset: &str) -> Result<(), String> {
    let nft = nft_binary()?;
    let mut child = tokio::process::Command::new(nft)
        .args(["-f", "-"])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .await
            .map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| "nft did not finish in time".to_string())?
        .map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft refused the firewall: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The IPv4 resolvers of `/etc/resolv.conf`; when those are loopback addresses (a local stub
/// such as systemd-resolved, unreachable from a sandbox), the stub's upstream servers.
fn nameservers() -> Vec<Ipv4Addr> {
    let parse = |path: &str| -> Vec<Ipv4Addr> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect()
    };
    let servers = parse("/etc/resolv.conf");
    if servers.is_empty() {
        parse("/run/systemd/resolve/resolv.conf")
    } else {
        servers
    }
}

/// The IPv4 networks the host is directly attached to (its neighbours), from the kernel's
/// routing table: routes without a gateway.
fn host_networks() -> Vec<Ipv4Net> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&table)
}

fn parse_routes(table: &str) -> Vec<Ipv4Net> {
    let mut nets = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0].starts_with("cerv") {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
        let (Some(dest), Some(gateway), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else {
            continue;
        };
        if gateway != 0 || mask == 0 {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(Ipv4Addr::from(dest), mask.count_ones() as u8) {
            nets.push(net.trunc());
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_networks_come_from_gatewayless_routes() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            cerv7\t1C00D50A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_routes(table),
            vec!["192.0.2.0/24".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn slots_get_disjoint_slash_30s() {
        let plan = EgressPlan {
            subnet: "10.213.0.0".parse().unwrap(),
            nameservers: Default::default(),
        };
        let a = plan.for_slot(0);
        let b = plan.for_slot(4095);
        assert_eq!(
            (a.gateway, a.address),
            ("10.213.0.1".parse().unwrap(), "10.213.0.2".parse().unwrap())
        );
        assert_eq!(b.address, "10.213.63.254".parse::<Ipv4Addr>().unwrap());
        assert_eq!(b.host_if, "cerv4095");
    }

    #[test]
    fn ruleset_renders_resolvers_neighbours_lists_and_guard() {
        let mut inputs = Inputs {
            nameservers: vec!["10.255.255.53".parse().unwrap()],
            host_nets: vec!["192.0.2.0/24".parse().unwrap()],
            blocked: parse_list("10.0.0.0/8 # private\n\n168.63.129.16\n").unwrap(),
            allowed: None,
        };
        let r = render(&inputs, true);
        assert!(r.contains("elements = { 10.0.0.0/8, 168.63.129.16/32, 192.0.2.0/24 }"));
        assert!(
            r.contains("ip daddr { 10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept")
        );
        assert!(r.contains("iifname != \"cerv*\" oifname != \"cerv*\" drop"));
        assert!(!r.contains("daddr != {"));
        for placeholder in [
            "@BLOCKED@",
            "@DNS_RULES@",
            "@FORWARD_GUARD@",
            "@ALLOW_RULES@",
        ] {
            assert!(!r.contains(placeholder));
        }
        inputs.allowed = Some(parse_list("151.101.0.0/16").unwrap());
        assert!(
            render(&inputs, false)
                .contains("iifname \"cerv*\" ip daddr != { 151.101.0.0/16 } drop")
        );
        inputs.allowed = Some(vec![]);
        assert!(render(&inputs, false).contains("    iifname \"cerv*\" drop\n  }\n}"));
    }

    #[test]
    fn lists_parse_strictly_and_the_builtin_one_holds_the_platform_endpoints() {
        assert!(parse_list("10.0.0.0/33").is_err());
        assert!(parse_list("example.com").unwrap_err().contains("line 1"));
        assert_eq!(
            parse_list("10.1.2.3/8").unwrap(),
            vec!["10.0.0.0/8".parse::<Ipv4Net>().unwrap()]
        );
        let builtin = parse_list(BUILTIN_BLOCKLIST).unwrap();
        for addr in [
            "168.63.129.16",
            "169.254.169.254",
            "100.100.100.200",
            "192.0.0.192",
            "10.1.1.1",
        ] {
            let addr: Ipv4Addr = addr.parse().unwrap();
            assert!(builtin.iter().any(|n| n.contains(&addr)), "{addr}");
        }
        let public: Ipv4Addr = "151.101.0.223".parse().unwrap();
        assert!(!builtin.iter().any(|n| n.contains(&public)));
    }
}
