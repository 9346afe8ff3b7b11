// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Escrow} from "./Escrow.sol";
import {IClaimWords, NodeRegistry} from "./NodeRegistry.sol";
import {SortedMerkleRoot} from "./SortedMerkleRoot.sol";

/// @notice Per-epoch reward roots and claims. The settler posts (epoch, root, total, sha256 of the epoch's
/// manifest.json) with the payers' charges; the charges are debited from the escrow and, with a draw on the capacity
/// pool, must cover the total. During the challenge window anyone can dispute the root by posting a bond; a disputed
/// epoch pays nothing until the arbiter resolves it (upheld: the bond goes to the treasury; overturned: the bond is
/// returned, the charges refunded, the draw returned, and the settler may post the epoch again). After the window a
/// node claims its leaf (epoch, node, amount) with a proof against the root, in the
/// StandardMerkleTree format from OpenZeppelin's merkle-tree library (double-hashed leaves).
/// Slashing takes a quorum of gateway signatures (EIP-712) over a failed capacity challenge: evidence the chain
/// checks itself. A client's word alone never slashes.
contract Settlement is AccessControl, ReentrancyGuardTransient, EIP712, IClaimWords {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");
    bytes32 public constant GATEWAY_ROLE = keccak256("GATEWAY_ROLE");

    bytes32 public constant FAILED_CHALLENGE_TYPEHASH = keccak256(
        "FailedChallenge(address node,uint256 epoch,bytes32 challengeId,bytes32 shard,uint64 rangeStart,uint64 rangeLength,uint8 failure)"
    );

    enum Status {
        None,
        Posted,
        Disputed,
        Voided
    }

    /// What a posted root was posted with; claims read none of it.
    struct Epoch {
        bytes32 root;
        uint128 total;
        uint128 capacityDraw;
        bytes32 manifestSha256;
        uint256 charged;
    }

    /// One slot for what every claim reads and writes: what is left to claim, when claims open, the status. It is
    /// stored under (epoch, root), so a claim finds it with the root its proof leads to: a wrong proof finds an empty
    /// slot (status None). That makes the proof check and the state read one cold slot (2,100 gas), not two.
    struct Claims {
        uint128 remaining;
        uint64 challengeEnds;
        Status status;
    }

    struct Dispute {
        address challenger;
        uint256 bond;
        bytes32 reason;
    }

    /// What gateways sign when a node fails a capacity challenge (wrong bytes or missed deadline).
    struct FailedChallenge {
        address node;
        uint256 epoch;
        bytes32 challengeId;
        bytes32 shard;
        uint64 rangeStart;
        uint64 rangeLength;
        /// 1 = wrong bytes, 2 = missed the deadline.
        uint8 failure;
    }

    IERC20 public immutable token;
    Escrow public immutable escrow;
    NodeRegistry public immutable registry;
    uint64 public immutable challengeWindow;
    uint256 public immutable disputeBond;
    uint256 public immutable slashAmount;
    uint256 public immutable gatewayQuorum;
    address public immutable treasury;

    uint256 public capacityPool;
    mapping(uint256 => Epoch) internal epochRecords;
    mapping(uint256 => mapping(bytes32 => Claims)) internal claimsByRoot;
    mapping(uint256 => Dispute) public disputes;
    mapping(uint256 => Escrow.Charge[]) internal epochCharges;
    /// Per node, a bitmap of the epochs it has claimed: word epoch / 255, bit epoch % 255. A node that claims every
    /// epoch writes a word that is already non-zero, 5,000 gas instead of 22,100 for a fresh flag per (epoch, node).
    /// Bit 255 is no epoch: WARM, set by warmClaimWord (on registration) so that even a node's first claim rewrites a
    /// non-zero word; the fresh slot is paid once at registration instead of in the claim.
    mapping(address => mapping(uint256 => uint256)) internal claimedEpochs;
    uint256 internal constant EPOCHS_PER_WORD = 255;
    uint256 internal constant WARM = 1 << 255;
    /// The highest epoch with a posted root: registration warms the claim word of the epoch after it.
    uint256 public latestEpoch;
    mapping(bytes32 => bool) public evidenceUsed;
    mapping(uint256 => bool) public feesSwept;

    event CapacityPoolFunded(address indexed funder, uint256 amount, uint256 pool);
    event RootPosted(uint256 indexed epoch, bytes32 root, uint256 total, bytes32 manifestSha256, uint256 charged, uint256 capacityDraw, uint64 challengeEnds);
    event Claimed(uint256 indexed epoch, address indexed node, uint256 amount);
    event RootDisputed(uint256 indexed epoch, address indexed challenger, uint256 bond, bytes32 reason);
    event DisputeResolved(uint256 indexed epoch, bool rootUpheld, address challenger, uint256 bond);
    event EpochVoided(uint256 indexed epoch, uint256 refunded, uint256 capacityReturned);
    event FeesSwept(uint256 indexed epoch, uint256 amount, address treasury);
    event NodeSlashedForChallenge(address indexed node, bytes32 indexed evidence, uint256 epoch, bytes32 challengeId, uint256 amount);

    error ZeroRoot();
    error RootAlreadyPosted(uint256 epoch, Status status);
    error TotalExceedsFunds(uint256 total, uint256 available);
    error CapacityPoolTooSmall(uint256 draw, uint256 pool);
    error EpochNotPosted(uint256 epoch, Status status);
    error ChallengeWindowOpen(uint256 epoch, uint64 challengeEnds);
    error ChallengeWindowClosed(uint256 epoch, uint64 challengeEnds);
    error AlreadyClaimed(uint256 epoch, address node);
    error InvalidProof(uint256 epoch, address node, uint256 amount);
    error ClaimsExceedTotal(uint256 epoch, uint256 amount, uint256 remaining);
    error NotDisputed(uint256 epoch);
    error ZeroAmount();
    error EvidenceAlreadyUsed(bytes32 evidence);
    error SignersNotAscending(address signer);
    error NotAGateway(address signer);
    error QuorumNotMet(uint256 signers, uint256 quorum);
    error NothingToSweep(uint256 epoch);

    struct Config {
        IERC20 token;
        Escrow escrow;
        NodeRegistry registry;
        uint64 challengeWindow;
        uint256 disputeBond;
        uint256 slashAmount;
        uint256 gatewayQuorum;
        address treasury;
        address admin;
    }

    constructor(Config memory c) EIP712("edgeshard-settlement", "1") {
        require(c.gatewayQuorum > 0, "quorum must be at least one gateway");
        token = c.token;
        escrow = c.escrow;
        registry = c.registry;
        challengeWindow = c.challengeWindow;
        disputeBond = c.disputeBond;
        slashAmount = c.slashAmount;
        gatewayQuorum = c.gatewayQuorum;
        treasury = c.treasury;
        _grantRole(DEFAULT_ADMIN_ROLE, c.admin);
    }

    /// @notice Adds to the pool that pays capacity (and anonymous-traffic) rewards beside what payers are charged.
    function fundCapacityPool(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        capacityPool += amount;
        emit CapacityPoolFunded(msg.sender, amount, capacityPool);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Posts an epoch's root. `charges` are the paying clients' debits (from the epoch's accepted receipts);
    /// `capacityDraw` comes from the capacity pool. The total may not exceed their sum. One root per epoch, unless
    /// a dispute voided the previous one.
    function postRoot(uint256 epoch, bytes32 root, uint256 total, bytes32 manifestSha256, Escrow.Charge[] calldata charges, uint256 capacityDraw)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        if (root == bytes32(0)) revert ZeroRoot();
        Status was = claimsOf(epoch).status;
        if (was == Status.Posted || was == Status.Disputed) revert RootAlreadyPosted(epoch, was);
        if (capacityDraw > capacityPool) revert CapacityPoolTooSmall(capacityDraw, capacityPool);
        uint256 wanted;
        for (uint256 i = 0; i < charges.length; i++) wanted += charges[i].amount;
        if (total > wanted + capacityDraw) revert TotalExceedsFunds(total, wanted + capacityDraw);
        capacityPool -= capacityDraw;
        if (epoch > latestEpoch) latestEpoch = epoch;
        uint64 ends = uint64(block.timestamp) + challengeWindow;
        epochRecords[epoch] = Epoch({
            root: root,
            total: uint128(total), // total <= wanted + draw, both bounded by token supply
            capacityDraw: uint128(capacityDraw),
            manifestSha256: manifestSha256,
            charged: wanted
        });
        // A voided epoch posted again with the same root starts afresh under the same key.
        claimsByRoot[epoch][root] = Claims({remaining: uint128(total), challengeEnds: ends, status: Status.Posted});
        delete epochCharges[epoch];
        for (uint256 i = 0; i < charges.length; i++) epochCharges[epoch].push(charges[i]);
        emit RootPosted(epoch, root, total, manifestSha256, wanted, capacityDraw, ends);
        // Reverts with InsufficientEscrow when a payer has less than its charge.
        if (charges.length > 0) escrow.charge(epoch, charges);
    }

    /// @notice Pays `amount` to `node` for `epoch` if (epoch, node, amount) is a leaf of the epoch's root.
    /// Anyone may submit; the tokens always go to `node`.
    /// The storage slots, the leaf, the event and the transfer are written in assembly: each slot's keccak is computed
    /// once and each slot read once and written once (Solidity recomputes the word's slot and re-reads the packed
    /// Claims slot before writing it); test/contracts-settlement.test.ts checks them against the Solidity getters.
    /// What a refused claim is told, first reason first: EpochNotPosted, ChallengeWindowOpen (whatever the proof:
    /// during the window the answer is "wait"), AlreadyClaimed, InvalidProof, ClaimsExceedTotal. The code tests
    /// AlreadyClaimed first and the epoch's own state only in _refuseClaim, when the proof's root has no posted
    /// slot, so a valid claim pays for one slot read; the answers are the same: an epoch a node has claimed is
    /// Posted with its window closed for good (no dispute after the window, no second root while Posted).
    function claim(uint256 epoch, address node, uint256 amount, bytes32[] calldata proof) external nonReentrant {
        uint256 wordSlot;
        uint256 word; // the node's claim word, with this epoch's bit set once checked
        {
            uint256 bit;
            assembly ("memory-safe") {
                // claimedEpochs[node][epoch / EPOCHS_PER_WORD], bit epoch % EPOCHS_PER_WORD
                mstore(0x00, node)
                mstore(0x20, claimedEpochs.slot)
                mstore(0x20, keccak256(0x00, 0x40))
                mstore(0x00, div(epoch, EPOCHS_PER_WORD))
                wordSlot := keccak256(0x00, 0x40)
                word := sload(wordSlot)
                bit := shl(mod(epoch, EPOCHS_PER_WORD), 1)
            }
            if (word & bit != 0) revert AlreadyClaimed(epoch, node);
            word |= bit;
        }
        bytes32 root;
        {
            bytes32 leaf;
            assembly ("memory-safe") {
                // keccak256(bytes.concat(keccak256(abi.encode(epoch, node, amount)))), in free memory left unallocated
                let m := mload(0x40)
                mstore(m, epoch)
                mstore(add(m, 0x20), node)
                mstore(add(m, 0x40), amount)
                mstore(0x00, keccak256(m, 0x60))
                leaf := keccak256(0x00, 0x20)
            }
            root = SortedMerkleRoot.ofCalldata(proof, leaf);
        }
        // The state under (epoch, the root the proof leads to): Posted only if that root is the epoch's posted root.
        uint256 claimsSlot;
        uint256 packed; // Claims, packed: remaining in bits 0-127, challengeEnds in 128-191, status in 192-199
        assembly ("memory-safe") {
            // claimsByRoot[epoch][root]
            mstore(0x00, epoch)
            mstore(0x20, claimsByRoot.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, root)
            claimsSlot := keccak256(0x00, 0x40)
            packed := sload(claimsSlot)
        }
        if (uint8(packed >> 192) != uint8(Status.Posted)) _refuseClaim(epoch, node, amount);
        if (block.timestamp < uint64(packed >> 128)) revert ChallengeWindowOpen(epoch, uint64(packed >> 128));
        // A root whose leaves add up to more than its total cannot pay out more than the total.
        if (amount > uint128(packed)) revert ClaimsExceedTotal(epoch, amount, uint128(packed));
        assembly ("memory-safe") {
            // amount <= remaining: the subtraction touches only the low 128 bits (remaining)
            sstore(claimsSlot, sub(packed, amount))
            sstore(wordSlot, word)
        }
        _payClaim(epoch, node, amount);
    }

    /// Emits Claimed(epoch, node, amount) and transfers `amount` to `node`, in assembly (no ABI-encoding buffers).
    /// The token is EdgeToken, fixed at deployment: an OpenZeppelin ERC20 whose transfer returns true or reverts.
    /// SafeERC20's one extra case (a token that returns nothing) cannot occur, so anything but true is refused.
    function _payClaim(uint256 epoch, address node, uint256 amount) private {
        address t = address(token);
        bytes32 topic = Claimed.selector;
        bool paid;
        assembly ("memory-safe") {
            mstore(0x00, amount)
            log3(0x00, 0x20, topic, epoch, node)
            // token.transfer(node, amount), encoded in free memory left unallocated
            let m := mload(0x40)
            mstore(m, shl(224, 0xa9059cbb))
            mstore(add(m, 0x04), node)
            mstore(add(m, 0x24), amount)
            mstore(0x00, 0)
            if iszero(call(gas(), t, 0, m, 0x44, 0x00, 0x20)) {
                returndatacopy(m, 0, returndatasize())
                revert(m, returndatasize())
            }
            paid := and(gt(returndatasize(), 0x1f), eq(mload(0x00), 1))
        }
        if (!paid) revert SafeERC20.SafeERC20FailedOperation(t);
    }

    /// Why a claim found no posted root under (epoch, its proof's root): the epoch's own root is not claimable
    /// (not posted, disputed, voided), its window is still open (a wrong proof then gets ChallengeWindowOpen, as a
    /// right one does), or the proof does not lead to it. Only refused claims pay for these reads.
    function _refuseClaim(uint256 epoch, address node, uint256 amount) private view {
        Claims memory c = claimsOf(epoch);
        if (c.status != Status.Posted) revert EpochNotPosted(epoch, c.status);
        if (block.timestamp < c.challengeEnds) revert ChallengeWindowOpen(epoch, c.challengeEnds);
        revert InvalidProof(epoch, node, amount);
    }

    /// The claim state of the epoch's current root (an empty one for an epoch never posted: its root is zero).
    function claimsOf(uint256 epoch) internal view returns (Claims storage) {
        return claimsByRoot[epoch][epochRecords[epoch].root];
    }

    /// @notice Sets the WARM bit of `node`'s claim word for the epoch after the newest posted root, if that word is
    /// still zero, so that the node's first claim there costs what its later ones do. NodeRegistry calls it when a
    /// node registers; anyone may (it pays the fresh slot and marks no epoch claimed). Before the first root nothing
    /// says which word the node's epochs will fall in, so nothing is written.
    function warmClaimWord(address node) external {
        if (latestEpoch == 0) return;
        uint256 w;
        unchecked {
            w = (latestEpoch + 1) / EPOCHS_PER_WORD; // a settler's epoch of 2**256 - 1 wraps to word 0: only gas
        }
        if (claimedEpochs[node][w] == 0) claimedEpochs[node][w] = WARM;
    }

    /// @notice Disputes a posted root during its challenge window, with a bond of `disputeBond` tokens (approve first).
    /// `reason` is the hash of the challenger's published evidence (e.g. the output of `edgeshard rewards verify`).
    function dispute(uint256 epoch, bytes32 reason) external nonReentrant {
        Claims storage c = claimsOf(epoch);
        if (c.status != Status.Posted) revert EpochNotPosted(epoch, c.status);
        if (block.timestamp >= c.challengeEnds) revert ChallengeWindowClosed(epoch, c.challengeEnds);
        c.status = Status.Disputed;
        disputes[epoch] = Dispute({challenger: msg.sender, bond: disputeBond, reason: reason});
        emit RootDisputed(epoch, msg.sender, disputeBond, reason);
        if (disputeBond > 0) token.safeTransferFrom(msg.sender, address(this), disputeBond);
    }

    /// @notice The arbiter's ruling after recomputing the epoch from its published files (whose sha256 is on chain).
    function resolveDispute(uint256 epoch, bool rootUpheld) external onlyRole(ARBITER_ROLE) nonReentrant {
        Claims storage c = claimsOf(epoch);
        Epoch storage e = epochRecords[epoch];
        if (c.status != Status.Disputed) revert NotDisputed(epoch);
        Dispute memory d = disputes[epoch];
        delete disputes[epoch];
        emit DisputeResolved(epoch, rootUpheld, d.challenger, d.bond);
        if (rootUpheld) {
            c.status = Status.Posted;
            if (d.bond > 0) token.safeTransfer(treasury, d.bond);
            return;
        }
        c.status = Status.Voided;
        uint256 draw = e.capacityDraw;
        capacityPool += draw;
        uint256 refunded = e.charged;
        emit EpochVoided(epoch, refunded, draw);
        Escrow.Charge[] memory charges = epochCharges[epoch];
        delete epochCharges[epoch];
        if (d.bond > 0) token.safeTransfer(d.challenger, d.bond);
        if (refunded > 0) {
            token.forceApprove(address(escrow), refunded);
            escrow.refund(epoch, charges);
        }
    }

    /// @notice After the window, what the payers paid beyond the total (the protocol fee) goes to the treasury.
    function sweepFees(uint256 epoch) external nonReentrant {
        Claims storage c = claimsOf(epoch);
        Epoch storage e = epochRecords[epoch];
        if (c.status != Status.Posted) revert EpochNotPosted(epoch, c.status);
        if (block.timestamp < c.challengeEnds) revert ChallengeWindowOpen(epoch, c.challengeEnds);
        uint256 funds = e.charged + e.capacityDraw;
        if (feesSwept[epoch] || funds <= e.total) revert NothingToSweep(epoch);
        uint256 fee = funds - e.total;
        // No dispute can start once the window is closed, so the epoch can no longer be voided and refunded.
        feesSwept[epoch] = true;
        emit FeesSwept(epoch, fee, treasury);
        token.safeTransfer(treasury, fee);
    }

    /// @notice Slashes a node on a quorum of gateway signatures over a failed capacity challenge. Anyone may submit;
    /// each piece of evidence slashes once. Signatures must come from distinct GATEWAY_ROLE keys, sorted by address.
    function slashForFailedChallenge(FailedChallenge calldata c, bytes[] calldata signatures) external nonReentrant {
        bytes32 digest = failedChallengeDigest(c);
        if (evidenceUsed[digest]) revert EvidenceAlreadyUsed(digest);
        address last;
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = ECDSA.recover(digest, signatures[i]);
            if (signer <= last) revert SignersNotAscending(signer);
            if (!hasRole(GATEWAY_ROLE, signer)) revert NotAGateway(signer);
            last = signer;
        }
        if (signatures.length < gatewayQuorum) revert QuorumNotMet(signatures.length, gatewayQuorum);
        evidenceUsed[digest] = true;
        uint256 taken = registry.slash(c.node, slashAmount, treasury, digest);
        emit NodeSlashedForChallenge(c.node, digest, c.epoch, c.challengeId, taken);
    }

    function failedChallengeDigest(FailedChallenge calldata c) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(FAILED_CHALLENGE_TYPEHASH, c.node, c.epoch, c.challengeId, c.shard, c.rangeStart, c.rangeLength, c.failure))
        );
    }

    /// @notice The epoch's record and its claim state (the same outputs as a public getter of the old one-struct layout).
    function epochs(uint256 epoch)
        external
        view
        returns (bytes32 root, uint128 remaining, uint64 challengeEnds, Status status, uint128 total, uint128 capacityDraw, bytes32 manifestSha256, uint256 charged)
    {
        Epoch storage e = epochRecords[epoch];
        Claims storage c = claimsByRoot[epoch][e.root];
        return (e.root, c.remaining, c.challengeEnds, c.status, e.total, e.capacityDraw, e.manifestSha256, e.charged);
    }

    function claimed(uint256 epoch, address node) external view returns (bool) {
        return claimedEpochs[node][epoch / EPOCHS_PER_WORD] & (1 << (epoch % EPOCHS_PER_WORD)) != 0;
    }

    function chargesOf(uint256 epoch) external view returns (Escrow.Charge[] memory) {
        return epochCharges[epoch];
    }
}
