//! Command line, compatible with the original agent's (`-c FILE -l DIR -alsologtostderr -v N`).
