"""The lab's second engine: every node a QEMU/TCG guest running real OpenZFS 2.3.

``image`` builds (and caches) the guest image, ``vm`` starts and stops one guest, ``engine``
is the lab engine on top of them. See docs/lab.md, "The OpenZFS engine".
"""
