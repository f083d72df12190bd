module tracer-tests/go-demo-svc

go 1.23
