//! TODO

pub fn start(_ctx: &std::sync::Arc<super::Ctx>, _workers: usize) {}
