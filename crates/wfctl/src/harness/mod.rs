//! What `wfctl bench` and `wfctl chaos` share: the services as child processes (`procs`),
//! the loopback HTTPS receiver that counts delivery ids (`receiver`), the event publisher
//! (`load`), a small HTTP client (`http`), the HTTPS accept loop of every receiver
//! (`https`, `wfctl listen`'s too) and a fresh vhost and database per run (`isolation`).

pub mod http;
pub mod https;
pub mod isolation;
pub mod load;
pub mod procs;
pub mod receiver;
