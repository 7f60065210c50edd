"""podnet's eBPF programs: their C sources, how they are compiled (``build``), attached with tc
(``tc``) and how their maps are read and written by id (``maps``)."""
