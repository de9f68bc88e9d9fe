//! Wire formats, free of I/O: Stratum V1 lines, BTCAgent ex-messages, job rewriting.
