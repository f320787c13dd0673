//! Requests/s and p99 for build reads, registrations and certificate issuance with 1 and
//! with 3 replicas behind HAProxy on one PostgreSQL, and the CPU each side used.
use super::*;

/// Fields of /proc/PID/stat after the command name (index 0 = state, 1 = ppid, 11 = utime).
fn stat(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    stat(pid).map_or(0, |f| f[11] + f[12])
}

/// CPU ticks of this test's PostgreSQL only (other servers may run on the machine): the
/// postmaster with the children it has reaped (backends of closed connections) and those
/// still running.
fn pg_ticks(pg: &Postgres) -> u64 {
    let pidfile = pg.data_dir().join("data/postmaster.pid");
    let Some(master) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
    else {
        panic!("no postmaster pid in {}", pidfile.display());
    };
    let mut total = stat(master).map_or(0, |f| f[11] + f[12] + f[13] + f[14]);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(f) = stat(pid) {
            if f[1] == u64::from(master) {
                total += f[11] + f[12];
            }
        }
    }
    total
}

/// One benchmarked operation: (client, iteration) → answered 2xx.
type Op = Arc<dyn Fn(u64, u64) -> bool + Send + Sync>;

struct Result {
    ops: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    pg_cpu: f64,
    manager_cpu: f64,
    client_cpu: f64,
}

fn measure(pg: &Postgres, pids: &[u32], clients: u64, secs: u64, op: Op) -> Result {
    let tick = 100.0; // USER_HZ on Linux
    let (pg0, m0): (u64, u64) = (pg_ticks(pg), pids.iter().map(|p| cpu_ticks(*p)).sum());
    // The load generator (this process: HTTP clients, CSRs, simulated evidence signing).
    let c0 = cpu_ticks(std::process::id());
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, errors, lat, op) = (stop.clone(), errors.clone(), lat.clone(), op.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(c, i) {
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| {
        if l.is_empty() {
            0.0
        } else {
            l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
        }
    };
    Result {
        ops: l.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs: elapsed,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        pg_cpu: pg_ticks(pg).saturating_sub(pg0) as f64 / tick / elapsed,
        manager_cpu: pids
            .iter()
            .map(|p| cpu_ticks(*p))
            .sum::<u64>()
            .saturating_sub(m0) as f64
            / tick
            / elapsed,
        client_cpu: cpu_ticks(std::process::id()).saturating_sub(c0) as f64 / tick / elapsed,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

const OPS: [&str; 3] = [
    "build read (GET /v1/builds/{id})",
    "registration (POST /v1/builds)",
    "issuance (nonce + POST /v1/certificates)",
];

/// One install (its own database) with `n` replicas behind HAProxy, and the operations.
struct Stack {
    n: usize,
    /// Killed on drop.
    _replicas: Vec<Replica>,
    _proxy: Haproxy,
    _install: Install,
    pids: Vec<u32>,
    ops: Vec<Op>,
}

fn stack(pg: &Postgres, n: usize) -> Stack {
    let install = Install::new(pg);
    let http = http_client();
    let mut replicas: Vec<Replica> = (0..n)
        .map(|i| Replica::new(&install, &format!("b{n}-{i}"), 8))
        .collect();
    for r in replicas.iter_mut() {
        // Every client is 127.0.0.1 (HAProxy's address) to the replicas: the per-address
        // nonce limit (60 a minute by default) would measure the limiter, not issuance.
        r.args
            .extend(["--nonce-rate-per-minute".into(), "1000000".into()]);
        r.start();
    }
    for r in replicas.iter_mut() {
        r.wait_ready(&http);
    }
    let pids: Vec<u32> = replicas.iter().filter_map(|r| r.pid()).collect();
    let proxy = Haproxy::start(&replicas.iter().map(|r| r.port).collect::<Vec<_>>());
    let s = Arc::new(setup(&proxy.url()));
    // Builds to read and to issue for: registered and approved up front.
    let mut ids = Vec::new();
    for k in 0..50u64 {
        let b = s.admin.must(
            reqwest::Method::POST,
            "/v1/builds",
            &build_body(&s.app_id, k),
        );
        let task = b["task_id"].as_str().unwrap().to_string();
        for (api, _) in &s.approvers {
            api.must(
                reqwest::Method::PATCH,
                &format!("/v1/tasks/{task}"),
                &json!({"status": "APPROVED"}),
            );
        }
        ids.push(b["build_id"].as_str().unwrap().to_string());
    }
    let ids = Arc::new(ids);
    let sim = Arc::new(install.sim_key.clone());
    let key = Arc::new(csr());
    // Registrations of a round continue where the last one stopped (a new measurement each).
    let next = Arc::new(AtomicU64::new(1 << 40));
    let ops: Vec<Op> = vec![
        {
            let (s, ids) = (s.clone(), ids.clone());
            Arc::new(move |c, i| {
                ok(s.admin.get(&format!(
                    "/v1/builds/{}",
                    ids[((c * 7919 + i) % ids.len() as u64) as usize]
                )))
                .is_some()
            })
        },
        {
            let s = s.clone();
            Arc::new(move |_, _| {
                let n = next.fetch_add(1, Ordering::Relaxed);
                ok(s.admin.post("/v1/builds", &build_body(&s.app_id, n))).is_some()
            })
        },
        {
            let (s, sim, key) = (s.clone(), sim.clone(), key.clone());
            Arc::new(move |c, i| {
                ok(issue(&s.anon, &sim, &s.app_id, (c * 31 + i) % 50, &key)).is_some()
            })
        },
    ];
    Stack {
        n,
        _replicas: replicas,
        _proxy: proxy,
        _install: install,
        pids,
        ops,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Both stacks up at once; after a warm-up of each case, `BENCH_RUNS` rounds, each measuring
/// every case on 1 and then on 3 replicas, so that the machine's drifting load falls on both
/// alike; the table shows the medians over the rounds, the ratios are the medians' ratios.
pub fn run() {
    let secs = env_u64("BENCH_SECONDS", 5);
    let clients = env_u64("BENCH_CLIENTS", 8);
    let runs = env_u64("BENCH_RUNS", 3).max(1) as usize;
    let warmup = env_u64("BENCH_WARMUP_SECONDS", 2);
    let pg = Postgres::shared();
    println!(
        "bench: {} CPUs, load average {}, {clients} clients, warm-up {warmup} s then {runs} rounds of {secs} s per case, binary {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        cloak_bin().display()
    );
    let stacks: Vec<Stack> = [1usize, 3].into_iter().map(|n| stack(pg, n)).collect();
    for st in &stacks {
        for op in &st.ops {
            measure(pg, &st.pids, clients, warmup, op.clone());
        }
    }
    let mut results: BTreeMap<(usize, usize), Vec<Result>> = BTreeMap::new();
    for _ in 0..runs {
        for st in &stacks {
            for (k, op) in st.ops.iter().enumerate() {
                let r = measure(pg, &st.pids, clients, secs, op.clone());
                results.entry((st.n, k)).or_default().push(r);
            }
        }
    }
    println!("| replicas | operation | requests/s (median) | min–max | p50 ms | p99 ms | errors | PostgreSQL CPU (cores) | replicas CPU (cores) | load generator CPU (cores) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rates: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for ((n, k), rs) in &results {
        let rate: Vec<f64> = rs.iter().map(|r| r.ops as f64 / r.secs).collect();
        let (lo, hi) = rate
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let m = median(rate.clone());
        rates.insert((*n, *k), m);
        let med = |f: fn(&Result) -> f64| median(rs.iter().map(f).collect());
        println!(
            "| {n} | {} | {m:.0} | {lo:.0}–{hi:.0} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} |",
            OPS[*k],
            med(|r| r.p50_ms),
            med(|r| r.p99_ms),
            rs.iter().map(|r| r.errors).sum::<u64>(),
            med(|r| r.pg_cpu),
            med(|r| r.manager_cpu),
            med(|r| r.client_cpu),
        );
    }
    for (k, name) in OPS.iter().enumerate() {
        println!(
            "bench: {name}: 3 replicas / 1 replica = {:.2}",
            rates[&(3, k)] / rates[&(1, k)]
        );
    }
    for st in &stacks {
        let peak = st.pids.iter().map(|p| peak_rss_kib(*p)).max().unwrap_or(0);
        println!(
            "bench: {} replica(s): peak RSS of the largest replica {:.1} MiB",
            st.n,
            peak as f64 / 1024.0
        );
    }
}
