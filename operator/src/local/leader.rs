//! Leadership in local mode: an exclusive lock on a file in the state
//! directory.

use std::{path::Path, time::Duration};

use tokio::sync::watch;

use crate::source::Leadership;
use tokenwarden_durable::write_atomic;

/// Local mode leader election: an exclusive lock on `<state>/leader.lock`
/// (released by the kernel when the process dies, even by `kill -9`). The
/// leader writes its control address to `<state>/leader.addr` for
/// redirects.
pub fn local_leadership(
    state: &Path,
    address: String,
) -> std::io::Result<watch::Receiver<Leadership>> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(state.join("leader.lock"))?;
    let addr_file = state.join("leader.addr");
    let (tx, rx) = watch::channel(Leadership::default());
    std::thread::Builder::new()
        .name("leader-lock".into())
        .spawn(move || {
            loop {
                match lock.try_lock() {
                    Ok(()) => {
                        if let Err(e) = write_atomic(&addr_file, address.as_bytes(), true) {
                            tracing::warn!(error = %e, "cannot publish the leader address");
                        }
                        tracing::info!("acquired leadership (local lock)");
                        tx.send_replace(Leadership {
                            leader: true,
                            leader_address: None,
                        });
                        // Held until the process exits.
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(_) => {
                        let leader = std::fs::read_to_string(&addr_file)
                            .ok()
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty());
                        tx.send_if_modified(|l| {
                            let new = Leadership {
                                leader: false,
                                leader_address: leader.clone(),
                            };
                            let changed = *l != new;
                            *l = new;
                            changed
                        });
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })?;
    Ok(rx)
}
