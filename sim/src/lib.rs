pub mod bitcoin;
pub mod exmsg;
pub mod job;
pub mod share;
