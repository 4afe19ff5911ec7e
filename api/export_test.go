package api

// ToError is toError, for the tests of package api_test, which may import
// the packages above api (node) that api itself cannot.
var ToError = toError
