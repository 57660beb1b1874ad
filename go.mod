module github.com/chatstate/upstash

go 1.22

require (
	github.com/alicebob/miniredis/v2 v2.40.0
	github.com/aws/aws-lambda-go v1.54.0
	github.com/caarlos0/env/v11 v11.4.1
	github.com/go-resty/resty/v2 v2.16.5
	github.com/gomodule/redigo v1.9.3
	github.com/jarcoal/httpmock v1.4.1
)

require (
	github.com/yuin/gopher-lua v1.1.1 // indirect
	golang.org/x/net v0.33.0 // indirect
)
