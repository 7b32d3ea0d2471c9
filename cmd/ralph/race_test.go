//go:build race

package main

// raceBuild: these tests are built with the race detector, and so is the
// ralph they run.
const raceBuild = true
