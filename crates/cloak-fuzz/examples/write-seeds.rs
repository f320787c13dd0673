//! Writes the seed corpus: `write-seeds DIR` creates `DIR/<target>/<seed>` (used by
//! scripts/fuzz.sh before each campaign).

fn main() {
    let dir = std::path::PathBuf::from(std::env::args_os().nth(1).expect("usage: write-seeds DIR"));
    let scratch = tempfile::tempdir().expect("scratch directory");
    for (target, name, bytes) in cloak_fuzz::seeds::all(scratch.path()) {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("corpus directory");
        std::fs::write(d.join(format!("seed-{name}")), bytes).expect("seed");
    }
}
