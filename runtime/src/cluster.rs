//! Workers and processes: `--workers N` threads per process, and multi-process clusters over TCP
//! (process index + hostfile of `host:port` lines, as timely's `-n/-p/-h`).

use std::path::PathBuf;

use timely::worker::Worker;
use timely::{CommunicationConfig, Config, WorkerConfig};

use crate::RuntimeError;

/// Where and how wide a dataflow runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Worker threads per process (default 1).
    pub workers: usize,
    /// Number of processes (default 1).
    pub processes: usize,
    /// This process's index in `0..processes`.
    pub process: usize,
    /// File with one `host:port` per process (required when `processes > 1`).
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

impl ClusterConfig {
    /// A single process with `workers` threads.
    pub fn threads(workers: usize) -> Self {
        Self {
            workers,
            ..Self::default()
        }
    }

    /// Total number of workers in the cluster.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }

    /// Whether this process hosts worker 0 (reads inputs, writes outputs).
    pub fn is_leader(&self) -> bool {
        self.process == 0
    }

    /// Checks the configuration and reads the hostfile.
    pub fn timely_config(&self) -> Result<Config, RuntimeError> {
        if self.workers == 0 {
            return Err(RuntimeError::Cluster("--workers must be at least 1".into()));
        }
        if self.processes == 0 {
            return Err(RuntimeError::Cluster(
                "--processes must be at least 1".into(),
            ));
        }
        if self.process >= self.processes {
            return Err(RuntimeError::Cluster(format!(
                "--process {} is out of range for --processes {} (use 0..{})",
                self.process, self.processes, self.processes
            )));
        }
        let communication = if self.processes > 1 {
            let Some(path) = &self.hostfile else {
                return Err(RuntimeError::Cluster(
                    "--processes > 1 needs --hostfile FILE with one host:port line per process"
                        .into(),
                ));
            };
            let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Hostfile {
                path: path.clone(),
                source,
            })?;
            let addresses: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            if addresses.len() < self.processes {
                return Err(RuntimeError::Cluster(format!(
                    "hostfile {} lists {} addresses but --processes is {}",
                    path.display(),
                    addresses.len(),
                    self.processes
                )));
            }
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses: addresses.into_iter().take(self.processes).collect(),
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }

    /// Runs `func` on every worker of this process and returns their results in worker order.
    pub fn execute<T, F>(&self, func: F) -> Result<Vec<T>, RuntimeError>
    where
        T: Send + 'static,
        F: Fn(&mut Worker) -> T + Send + Sync + 'static,
    {
        let config = self.timely_config()?;
        let guards = timely::execute(config, func).map_err(RuntimeError::Start)?;
        let first = self.process * self.workers;
        guards
            .join()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.map_err(|message| RuntimeError::Worker {
                    index: first + i,
                    message,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configurations_say_what_to_do() {
        let err = ClusterConfig {
            processes: 2,
            ..ClusterConfig::default()
        }
        .timely_config()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("--hostfile"), "{err}");
        let err = ClusterConfig {
            processes: 2,
            process: 2,
            ..ClusterConfig::default()
        }
        .timely_config()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("out of range"), "{err}");
        let err = ClusterConfig::threads(0)
            .timely_config()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn workers_return_results_in_order() -> Result<(), RuntimeError> {
        let out = ClusterConfig::threads(3).execute(|w| (w.index(), w.peers()))?;
        assert_eq!(out, vec![(0, 3), (1, 3), (2, 3)]);
        Ok(())
    }
}
