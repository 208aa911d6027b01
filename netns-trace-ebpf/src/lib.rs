#![no_std]
// This file exists to enable the library target (the loader build-depends on it).
