# SPDX-License-Identifier: Apache-2.0
"""Image authoring: pack (with check, tree, formats, tarwriter, fsimage), inspect, verify."""
