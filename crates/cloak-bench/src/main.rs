//! `cloak-bench`: cloak against named peers, same run, same inputs.

mod measure;

fn main() -> anyhow::Result<()> {
    let _ = measure::run;
    anyhow::bail!("no benchmark selected yet")
}
