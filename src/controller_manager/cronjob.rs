//! The cronjob controller — not implemented yet: enabling it only logs so. (Planned: see issue 5.)

pub fn start(_ctx: &std::sync::Arc<super::Ctx>, _workers: usize) {
    tracing::warn!("the cronjob controller is not implemented yet");
}
