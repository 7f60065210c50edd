module podnet/cniplugin

go 1.19
