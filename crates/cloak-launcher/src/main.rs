//! `cloak-launcher`: exec the application described by /cloak/run.json.

use std::collections::BTreeMap;

fn main() {
    if std::process::id() == 1 {
        cloak_launcher::init::run_as_init();
    }
    let outer: BTreeMap<String, String> = std::env::vars().collect();
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let err = cloak_launcher::launch(&mut cloak_launcher::RealSys, &outer, &extra);
    eprintln!("cloak-launcher: {err}");
    std::process::exit(err.exit_status());
}
