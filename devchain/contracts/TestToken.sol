// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestToken: a deployable ERC-20 for the scanner's tests, demo and benchmarks.
/// @notice Anyone may mint. Never deploy outside a test chain.
contract TestToken is ERC20 {
    uint8 private immutable _decimals;

    error LengthMismatch(uint256 recipients, uint256 amounts);

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Mint `amount` to `to`. Open to anyone: this is a test token.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Pay many recipients in one transaction, one standard Transfer event each.
    function batchTransfer(address[] calldata recipients, uint256[] calldata amounts) external returns (bool) {
        if (recipients.length != amounts.length) {
            revert LengthMismatch(recipients.length, amounts.length);
        }
        for (uint256 i = 0; i < recipients.length; ++i) {
            _transfer(msg.sender, recipients[i], amounts[i]);
        }
        return true;
    }
}

/// @title OddEmitter: emits logs that share the ERC-20 Transfer signature but not its shape.
/// @notice The scanner must skip both: ERC-721 style (tokenId indexed, 4 topics, empty data)
///         and 3 topics with 64 bytes of data.
contract OddEmitter {
    /// ERC-721 shape: same signature hash as ERC-20 Transfer(address,address,uint256).
    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    function emit721(address from, address to, uint256 tokenId) external {
        emit Transfer(from, to, tokenId);
    }

    /// @notice Transfer signature, from/to indexed, but 64 bytes of data (a, b).
    function emitLongData(address from, address to, uint256 a, uint256 b) external {
        bytes32 sig = keccak256("Transfer(address,address,uint256)");
        assembly {
            let ptr := mload(0x40)
            mstore(ptr, a)
            mstore(add(ptr, 0x20), b)
            log3(ptr, 0x40, sig, from, to)
        }
    }
}

/// @title Reverter: any call or plain ETH transfer to it reverts.
/// @notice Used to mine a failed (status 0) transaction that carries ETH value.
contract Reverter {
    error NoPayments();

    receive() external payable {
        revert NoPayments();
    }

    fallback() external payable {
        revert NoPayments();
    }
}
