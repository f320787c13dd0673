//! Progress bars on stderr when it is a terminal; silence otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use cloak_image::copy::{BlobAction, NoProgress, Progress};
use cloak_image::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// One bar per blob in flight.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, digest: &Digest, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(digest.hex()[..12].to_string());
        self.bars.lock().expect("not poisoned").insert(*digest, bar);
    }

    fn advance(&self, digest: &Digest, n: u64) {
        if let Some(b) = self.bars.lock().expect("not poisoned").get(digest) {
            b.inc(n);
        }
    }

    fn finish(&self, digest: &Digest, action: BlobAction) {
        if let Some(b) = self.bars.lock().expect("not poisoned").remove(digest) {
            b.finish_with_message(format!("{action:?}"));
            self.multi.remove(&b);
            let _ = self
                .multi
                .println(format!("{} {action:?}", &digest.hex()[..12]));
        }
    }

    fn stage(&self, name: &str) {
        let _ = self.multi.println(format!("stage: {name}"));
    }
}

/// Bars when stderr is a terminal and `quiet` is false, nothing otherwise.
pub fn for_stderr(quiet: bool) -> Arc<dyn Progress> {
    if quiet || !std::io::stderr().is_terminal() {
        Arc::new(NoProgress)
    } else {
        Arc::new(Bars {
            multi: MultiProgress::new(),
            bars: Mutex::default(),
        })
    }
}
