# SPDX-License-Identifier: Apache-2.0
"""Remotes: configuration (config), signed contents (contents, openpgp), fetch, populate."""
