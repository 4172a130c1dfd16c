"""Aggregate states and the pure `evolve` functions that fold events into them.

States are frozen; `evolve` returns a new state and copies only what an event changes.
"""

from __future__ import annotations

from atp.state.items import (
    ExpectedSupply as ExpectedSupply,
)
from atp.state.items import (
    Holds as Holds,
)
from atp.state.items import (
    ItemHold as ItemHold,
)
from atp.state.items import (
    ItemState as ItemState,
)
from atp.state.items import (
    LocationStock as LocationStock,
)
from atp.state.items import (
    evolve_item as evolve_item,
)
from atp.state.items import (
    merge_holds as merge_holds,
)
from atp.state.items import (
    state_dec_hook as state_dec_hook,
)
from atp.state.items import (
    state_enc_hook as state_enc_hook,
)
from atp.state.orders import (
    OrderLineState as OrderLineState,
)
from atp.state.orders import (
    OrderState as OrderState,
)
from atp.state.orders import (
    OrderStatus as OrderStatus,
)
from atp.state.orders import (
    evolve_order as evolve_order,
)
from atp.state.policies import (
    GLOBAL as GLOBAL,
)
from atp.state.policies import (
    Channel as Channel,
)
from atp.state.policies import (
    Location as Location,
)
from atp.state.policies import (
    Policies as Policies,
)
from atp.state.policies import (
    evolve_policies as evolve_policies,
)
from atp.state.reservations import (
    ReservationState as ReservationState,
)
from atp.state.reservations import (
    ReservationStatus as ReservationStatus,
)
from atp.state.reservations import (
    evolve_reservation as evolve_reservation,
)
from atp.state.transfers import (
    TransferState as TransferState,
)
from atp.state.transfers import (
    TransferStatus as TransferStatus,
)
from atp.state.transfers import (
    evolve_transfer as evolve_transfer,
)
