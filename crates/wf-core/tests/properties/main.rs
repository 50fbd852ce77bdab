//! Properties of wf-core's edges, and the inputs they found, pinned as examples.

mod regressions;
