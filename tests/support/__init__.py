"""Helpers the tests share: the on-prem lab, socket sampling, upstream-format file writers, the trust hook."""
