//go:build lambda.norpc

package main

import (
	"fmt"
	"os"
)

// runLocalMain in a Lambda build (-tags lambda.norpc): the local runner and
// the embedded server it uses are left out, so they are not in the binary.
func runLocalMain() int {
	fmt.Fprintln(os.Stderr, "this binary was built for AWS Lambda (-tags lambda.norpc) and AWS_LAMBDA_RUNTIME_API is not set;\n"+
		"run the local demo with: go run ./examples/lambda")
	return 2
}
