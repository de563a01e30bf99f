//! A scheduler plugin for the host's own tests. Config:
//! `{"mode": "ok"|"loop"|"grow"|"trap", "tag": N, "refuse": R}`. `filter`
//! misbehaves per `mode` when the pod's name is "bad" (so one instance can
//! serve good and bad calls), and otherwise refuses the last `R` candidates
//! (default 0) for one reason without looking at them: a benchmark's floor
//! with the shape of a real answer; `score` answers `tag` for every
//! candidate, so a test can tell which version answered. It logs once per
//! configure, so it imports `log`.

use trellis_sdk::scheduler::*;

#[derive(Default)]
struct Misbehave {
    mode: String,
    tag: u8,
    refuse: usize,
    hoard: Vec<Vec<u8>>,
}

impl SchedulerPlugin for Misbehave {
    fn info() -> PluginInfo {
        plugin_info("Misbehave", "0.1.0", Phases::FILTER | Phases::SCORE)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let v: serde_json::Value =
            serde_json::from_str(config).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        self.mode = v["mode"].as_str().unwrap_or("ok").to_string();
        self.tag = v["tag"].as_u64().unwrap_or(0).min(100) as u8;
        self.refuse = v["refuse"].as_u64().unwrap_or(0) as usize;
        trellis_sdk::log::info(&format!(
            "misbehave configured: mode={} tag={}",
            self.mode, self.tag
        ));
        Ok(())
    }

    fn upsert_node(&mut self, _id: NodeId, _node: Node) -> Result<(), PluginError> {
        Ok(())
    }

    fn remove_node(&mut self, _id: NodeId) {}

    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        _max: u32,
    ) -> Result<FilterResult, PluginError> {
        if pod.name == "bad" {
            match self.mode.as_str() {
                "loop" => {
                    let mut i: u64 = 0;
                    loop {
                        i = std::hint::black_box(i.wrapping_add(1));
                    }
                }
                "grow" => loop {
                    self.hoard.push(vec![1u8; 1 << 20]);
                },
                "trap" => panic!("misbehave was asked to trap"),
                _ => {}
            }
        }
        let (feasible, refused) = candidates.split_at(candidates.len().saturating_sub(self.refuse));
        Ok(FilterResult {
            feasible: feasible.to_vec(),
            rejected: refused.to_vec(),
            rejected_reasons: vec![0; refused.len()],
            reasons: if refused.is_empty() {
                vec![]
            } else {
                vec![Reason {
                    message: "refused by configuration".into(),
                    unresolvable: true,
                }]
            },
        })
    }

    fn score(&mut self, _pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        Ok(vec![self.tag; candidates.len()])
    }
}

trellis_sdk::export_scheduler!(Misbehave);
